"""What the examples share: their flags (defaults from a `keras_a3c.presets.Preset`), resuming from
a checkpoint, and the tail of a run: train with checkpoints (Ctrl-C saves one), report, plot,
evaluate the deterministic policy, export it.

An example defines its flags with `define_flags(preset)`, reads them back as a `Preset` with
`settings()`, builds its network, and hands the agent to `train` and `evaluate_and_export`.
"""

from __future__ import annotations

import os
import sys
import time

import gymnasium
import keras
from absl import flags, logging

import keras_a3c
from keras_a3c.presets import Preset

FLAGS = flags.FLAGS


def define_flags(preset: Preset, flag_values: flags.FlagValues = FLAGS) -> None:
    """Define every example flag, with the preset's values as defaults (`flags/<name>.flags` holds
    the same values; a test keeps them equal)."""
    d = preset.flags()
    fv = {"flag_values": flag_values}
    # The task and the run.
    flags.DEFINE_string("env", d["env"], "Gymnasium environment id.", **fv)
    flags.DEFINE_integer("workers", d["workers"], "Asynchronous actor-learner threads sharing one model.",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("envs_per_worker", d["envs_per_worker"], "Environments each worker steps as one batch.",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("total_steps", d["total_steps"], "Environment steps to train for, summed over workers.",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("seed", 0, "Seed for weights, environments and action sampling.", **fv)
    # The update (keras_a3c.A3CConfig).
    flags.DEFINE_integer("n_steps", d["n_steps"], "t_max: steps per worker segment; one update per segment.",
                         lower_bound=1, **fv)
    flags.DEFINE_float("gamma", d["gamma"], "Discount factor.", lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_float("entropy_coef", d["entropy_coef"], "beta: weight of the entropy bonus.", lower_bound=0.0, **fv)
    flags.DEFINE_integer("entropy_decay_updates", d["entropy_decay_updates"], "If > 0, decay beta linearly to a "
                         "tenth of --entropy_coef over this many updates, then hold it: explore early, act closer to "
                         "greedy late. 0 keeps it constant.", lower_bound=0, **fv)
    flags.DEFINE_float("value_coef", d["value_coef"], "Weight of the value loss.", lower_bound=0.0, **fv)
    flags.DEFINE_float("max_grad_norm", d["max_grad_norm"], "Clip gradients to this global norm (cuts the spikes "
                       "when the critic is thrown off); 0 disables clipping.", lower_bound=0.0, **fv)
    flags.DEFINE_float("reward_scale", d["reward_scale"], "The learner trains on reward_scale * reward (logged "
                       "returns are unscaled); keeps value targets O(1) for large rewards.", lower_bound=0.0, **fv)
    flags.DEFINE_bool("hogwild", d["hogwild"], "Apply updates lock-free (as in the paper) instead of under a lock.",
                      **fv)
    flags.DEFINE_float("gae_lambda", d["gae_lambda"], "lambda of the generalised advantage estimate; 1 trains on the "
                       "paper's n-step returns.", lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_bool("normalize_advantages", d["normalize_advantages"], "Standardise each segment's advantages.",
                      **fv)
    flags.DEFINE_bool("normalize_rewards", d["normalize_rewards"], "Divide rewards by the running std of the "
                      "discounted return (logged returns stay raw).", **fv)
    flags.DEFINE_float("reward_clip", d["reward_clip"], "With --normalize_rewards, clip the normalised rewards to "
                       "[-reward_clip, reward_clip]; 0 does not clip.", lower_bound=0.0, **fv)
    flags.DEFINE_float("clip_raw_rewards", d["clip_raw_rewards"], "Clip each env reward to [-clip_raw_rewards, "
                       "clip_raw_rewards] before the learner uses it (1: the Atari papers' reward clipping; logged "
                       "returns stay raw); 0 does not clip.", lower_bound=0.0, **fv)
    flags.DEFINE_float("action_bound_coef", d["action_bound_coef"], "Box actions: weight of the loss that keeps the "
                       "Gaussian mean inside the action bounds (the env clips actions, so the mean can drift "
                       "out); 0 turns it off.", lower_bound=0.0, **fv)
    flags.DEFINE_bool("jit_compile", d["jit_compile"], "Compile the update with XLA: a few seconds more at the "
                      "start, cheaper updates on some networks (the Atari one), dearer on others (MinAtar's).", **fv)
    flags.DEFINE_float("importance_clip", d["importance_clip"], "rho-bar of the truncated importance weight "
                       "min(rho-bar, pi/mu) on the policy gradient (IMPALA's correction for the policy lag of "
                       "asynchronous updates); 0: no correction, as the A3C paper.", lower_bound=0.0, **fv)
    # The optimizer.
    flags.DEFINE_float("learning_rate", d["learning_rate"], "Learning rate of the shared optimizer.",
                       lower_bound=0.0, **fv)
    flags.DEFINE_integer("learning_rate_decay_updates", d["learning_rate_decay_updates"], "If > 0, decay the "
                         "learning rate linearly to a tenth of --learning_rate over this many updates, then hold it: "
                         "fewer runs oscillate or collapse before solving, and long runs stay solved. 0 keeps it "
                         "constant.", lower_bound=0, **fv)
    flags.DEFINE_enum("optimizer", d["optimizer"], ["adam", "rmsprop"], "The shared optimizer (rmsprop: the A3C "
                      "paper's shared RMSProp, Keras's rho 0.9).", **fv)
    flags.DEFINE_float("epsilon", d["epsilon"], "The optimizer's epsilon; above Keras's 1e-7 it damps the steps once "
                       "gradients get small.", lower_bound=0.0, **fv)
    # The network.
    flags.DEFINE_enum("network", d["network"], list(keras_a3c.presets.NETWORKS), "The actor-critic: mlp "
                      "(actor_critic_mlp), or actor_critic_cnn with the A3C paper's Atari network (atari) or the "
                      "MinAtar paper's (minatar).", **fv)
    flags.DEFINE_integer("lstm_units", d["lstm_units"], "If > 0, a recurrent policy (A3C LSTM): an LSTM cell of this "
                         "many units between the trunk and the heads, its state carried from step to step; 0 is "
                         "feedforward.", lower_bound=0, **fv)
    flags.DEFINE_list("hidden_units", [str(u) for u in d["hidden_units"]], "Widths of the shared MLP trunk.", **fv)
    flags.DEFINE_enum("std", d["std"], ["state_independent", "softplus"], "Gaussian policies (Box actions): one "
                      "learned log std per action dimension, or the A3C paper's softplus variance head.", **fv)
    flags.DEFINE_float("log_std_init", d["log_std_init"], "Gaussian policies: the initial log std.", **fv)
    flags.DEFINE_bool("normalize_observations", d["normalize_observations"], "Start the network with an "
                      "ObservationNormalization layer (running statistics learned during training, exported with "
                      "the policy).", **fv)
    # Stopping, evaluation and what is written.
    flags.DEFINE_float("target_return", d["target_return"], "Stop once the mean of the last 100 training returns "
                       "reaches this.", **fv)
    flags.DEFINE_integer("target_eval_episodes", d["target_eval_episodes"], "If > 0, the greedy policy must "
                         "reach --target_return too, over this many episodes (played with the updates paused), "
                         "before training stops; 0: the training mean alone.", lower_bound=0, **fv)
    flags.DEFINE_integer("eval_episodes", d["eval_episodes"], "Deterministic-policy evaluation episodes after "
                         "training.", lower_bound=0, **fv)
    flags.DEFINE_integer("steps_per_epoch", d["steps_per_epoch"], "Env steps per Keras epoch (one History row).",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("verbose", 1, "0 silent, 1 progress bar, 2 one line per epoch.", lower_bound=0,
                         upper_bound=2, **fv)
    flags.DEFINE_string("export_dir", None, "If set, write the policy here (must not exist), in --export_format.", **fv)
    flags.DEFINE_enum("export_format", "saved_model", ["saved_model", "tflite", "onnx"], "Format of --export_dir: "
                      "a TF SavedModel directory (what examples/play.py plays), a TFLite file, or an ONNX file "
                      "(needs tf2onnx).", **fv)
    flags.DEFINE_string("plot", None, "If set, write learning curves (return vs env steps and vs seconds, with the "
                        "target_return line) to this image: .png, .svg or .pdf.", **fv)
    flags.DEFINE_string("checkpoint_dir", None, "If set, save the whole training state here as it trains, at the "
                        "end, and on Ctrl-C (directories ckpt-<env step>; the newest --keep_checkpoints are kept).",
                        **fv)
    flags.DEFINE_integer("checkpoint_every_steps", 100_000, "Env steps between checkpoints.", lower_bound=1, **fv)
    flags.DEFINE_float("checkpoint_every_seconds", 60.0, "Seconds between checkpoints (whichever comes first).",
                       lower_bound=0.0, **fv)
    flags.DEFINE_integer("keep_checkpoints", 3, "How many checkpoints to keep.", lower_bound=1, **fv)
    # Where the workers run.
    flags.DEFINE_string("ray_address", None, "If set, run the workers in Ray actor processes (keras_a3c.RayBackend): "
                        "'auto' (the cluster `ray start --head` started on this machine), a head's host:port, or "
                        "'local' (a private Ray instance for this run). Unset: threads of this process.", **fv)
    flags.DEFINE_integer("ray_actors", 2, "With --ray_address: Ray actor processes; the --workers are spread over "
                         "them.", lower_bound=1, **fv)
    flags.DEFINE_integer("ray_segments_per_message", keras_a3c.RayBackend.segments_per_message, "With --ray_address: "
                         "segments whose gradients one message to the learner carries (more: fewer messages, older "
                         "weights).", lower_bound=1, **fv)
    flags.DEFINE_bool("resume", False, "Load the newest checkpoint in --checkpoint_dir (if any) and train on from "
                      "its global env step up to --total_steps; the model and optimizer flags are then those saved.",
                      **fv)

    flags.register_validator("env", lambda env_id: env_id in gymnasium.registry,
                             message="--env is not a registered gymnasium environment id", **fv)
    flags.register_validator("hidden_units", lambda units: all(u.isdigit() and int(u) > 0 for u in units),
                             message="--hidden_units must be positive integers, e.g. 64,64", **fv)
    flags.register_validator("plot", lambda path: path is None or path.lower().endswith((".png", ".svg", ".pdf")),
                             message="--plot must name a .png, .svg or .pdf file", **fv)
    flags.register_validator("export_dir", lambda path: path is None or not os.path.exists(path),
                             message="--export_dir already exists; choose a new directory", **fv)
    flags.register_validator("checkpoint_dir", lambda path: path is None or not os.path.isfile(path),
                             message="--checkpoint_dir is a file; it must be a directory", **fv)
    flags.register_multi_flags_validator(["ray_address", "ray_actors", "workers"],
                                         lambda f: f["ray_address"] is None or f["ray_actors"] <= f["workers"],
                                         message="--ray_actors must not exceed --workers (each actor runs at least "
                                         "one worker)", **fv)
    flags.register_multi_flags_validator(["resume", "checkpoint_dir"],
                                         lambda f: not f["resume"] or f["checkpoint_dir"],
                                         message="--resume needs --checkpoint_dir", **fv)


def settings() -> Preset:
    """The flags as a `Preset`; also quiets TensorFlow's INFO lines and seeds Keras, numpy and Python."""
    logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines out of the progress display
    keras.utils.set_random_seed(FLAGS.seed)
    return Preset(
        env=FLAGS.env,
        config=keras_a3c.A3CConfig(
            n_steps=FLAGS.n_steps, gamma=FLAGS.gamma, entropy_coef=FLAGS.entropy_coef,
            entropy_decay_updates=FLAGS.entropy_decay_updates, value_coef=FLAGS.value_coef,
            max_grad_norm=FLAGS.max_grad_norm or None, reward_scale=FLAGS.reward_scale, hogwild=FLAGS.hogwild,
            gae_lambda=FLAGS.gae_lambda, normalize_advantages=FLAGS.normalize_advantages,
            normalize_rewards=FLAGS.normalize_rewards, reward_clip=FLAGS.reward_clip or None,
            action_bound_coef=FLAGS.action_bound_coef, clip_raw_rewards=FLAGS.clip_raw_rewards or None,
            jit_compile=FLAGS.jit_compile, importance_clip=FLAGS.importance_clip or None,
        ),
        learning_rate=FLAGS.learning_rate,
        learning_rate_decay_updates=FLAGS.learning_rate_decay_updates,
        optimizer=FLAGS.optimizer,
        epsilon=FLAGS.epsilon,
        network=FLAGS.network,
        hidden_units=tuple(int(u) for u in FLAGS.hidden_units),
        std=FLAGS.std,
        log_std_init=FLAGS.log_std_init,
        normalize_observations=FLAGS.normalize_observations,
        lstm_units=FLAGS.lstm_units,
        workers=FLAGS.workers,
        envs_per_worker=FLAGS.envs_per_worker,
        total_steps=FLAGS.total_steps,
        target_return=FLAGS.target_return,
        target_eval_episodes=FLAGS.target_eval_episodes,
        eval_episodes=FLAGS.eval_episodes,
        steps_per_epoch=FLAGS.steps_per_epoch,
    )


def resume() -> keras_a3c.A3C | None:
    """With --resume, the agent of the newest checkpoint in --checkpoint_dir (weights, optimizer,
    counters, episode statistics, RNG state); None when there is none to resume. A checkpoint
    directory of an earlier run without --resume is refused, so nothing saved is overwritten."""
    if not FLAGS.checkpoint_dir:
        return None
    latest = keras_a3c.latest_checkpoint(FLAGS.checkpoint_dir)
    if latest and not FLAGS.resume:
        raise SystemExit(f"--checkpoint_dir {FLAGS.checkpoint_dir} holds checkpoints of an earlier run: "
                         "pass --resume to carry on from them, or choose another directory")
    if not latest:
        return None
    agent = keras_a3c.load(latest)
    print(f"resumed from {latest} at env step {agent.env_steps:,}")
    return agent


def train(agent: keras_a3c.A3C, preset: Preset) -> keras.callbacks.History | None:
    """Train up to --total_steps global env steps (or the preset's target return), checkpointing with
    --checkpoint_dir; print what was trained and plot it with --plot. Ctrl-C stops every worker,
    saves a final checkpoint and exits with code 130. None when there is nothing left to train."""
    first_step = agent.env_steps
    remaining = preset.total_steps - first_step
    if remaining <= 0:
        print(f"nothing to train: the checkpoint has {first_step:,} env steps, --total_steps is "
              f"{preset.total_steps:,}")
        return None
    callbacks: list[keras.callbacks.Callback] = [preset.stop_on_target(verbose=FLAGS.verbose)]
    checkpoint = None
    if FLAGS.checkpoint_dir:
        checkpoint = keras_a3c.Checkpoint(FLAGS.checkpoint_dir, every_steps=FLAGS.checkpoint_every_steps,
                                          every_seconds=FLAGS.checkpoint_every_seconds or None,
                                          keep=FLAGS.keep_checkpoints)
        callbacks.append(checkpoint)
    start = time.perf_counter()
    try:
        history = agent.fit(
            preset.env,
            total_steps=remaining,
            seed=None if first_step else FLAGS.seed,  # a resumed run carries on the saved RNG
            verbose=FLAGS.verbose,
            callbacks=callbacks,
            backend=backend(),
            **preset.fit_kwargs(),
        )
    except KeyboardInterrupt:
        # fit has stopped and joined every worker before the interrupt reaches us.
        if checkpoint is not None:
            print(f"\nsaved the training state to {checkpoint.save(agent)}; resume with --resume", file=sys.stderr)
        print(f"interrupted at env step {agent.env_steps:,}", file=sys.stderr)
        sys.exit(130)
    seconds = time.perf_counter() - start
    last = {k: v[-1] for k, v in history.history.items()}
    print(
        f"trained {int(last['env_steps']) - first_step:,} env steps in {seconds:.1f} s "
        f"({last['steps_per_second']:,.0f} steps/s while the workers ran), {int(last['episodes'])} episodes, "
        f"mean return of the last 100: {last['episode_return']:.1f}"
    )
    if FLAGS.plot:
        keras_a3c.plot_history(history, FLAGS.plot, target=preset.target_return)
        print(f"wrote learning curves to {FLAGS.plot}")
    return history


def backend() -> keras_a3c.RayBackend | None:
    """The Ray backend of --ray_address (None: threads)."""
    if FLAGS.ray_address is None:
        return None
    return keras_a3c.RayBackend(address=None if FLAGS.ray_address == "local" else FLAGS.ray_address,
                                actors=FLAGS.ray_actors, segments_per_message=FLAGS.ray_segments_per_message)


def evaluate_and_export(agent: keras_a3c.A3C, preset: Preset) -> None:
    """Evaluate the deterministic policy over --eval_episodes; with --export_dir, export it in
    --export_format (a SavedModel by default, which needs only TensorFlow; `examples/play.py` plays it)."""
    if preset.eval_episodes:
        mean, std = agent.evaluate(preset.env, episodes=preset.eval_episodes, deterministic=True)
        print(f"deterministic policy over {preset.eval_episodes} episodes: return {mean:.1f} +/- {std:.1f}")
    if FLAGS.export_dir:
        agent.export(FLAGS.export_dir, format=FLAGS.export_format)
        print(f"exported the policy to {FLAGS.export_dir} ({FLAGS.export_format})")
