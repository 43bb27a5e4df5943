"""Train A3C on CartPole-v1 with asynchronous worker threads, evaluate, export.

    python examples/cartpole.py --workers 8
    python examples/cartpole.py --flagfile=flags/cartpole.flags --export_dir=/tmp/cartpole_policy
    python examples/cartpole.py --workers 8 --plot curve.png
    python examples/cartpole.py --checkpoint_dir /tmp/run            # Ctrl-C, then:
    python examples/cartpole.py --checkpoint_dir /tmp/run --resume   # carries on from the last checkpoint

Eight Python threads share one Keras actor-critic and one optimizer; each steps its
own batch of CartPole envs and updates the shared model every `n_steps` steps.
Training stops at `total_steps` or once the mean return of the last 100 training
episodes reaches `target_return`; the greedy policy is then evaluated.
With `--checkpoint_dir` the whole training state is saved there as it trains (and when
training ends or is interrupted); `--resume` loads the newest checkpoint and trains on
to `total_steps`.
"""

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gymnasium  # noqa: E402
import keras  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import keras_a3c  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("env", "CartPole-v1", "Gymnasium environment id (Box observations, Discrete actions).")
flags.DEFINE_integer("workers", 8, "Asynchronous actor-learner threads sharing one model.", lower_bound=1)
flags.DEFINE_integer("envs_per_worker", 24, "Environments each worker steps as one batch.", lower_bound=1)
flags.DEFINE_integer("total_steps", 1_000_000, "Environment steps to train for, summed over workers.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed for weights, environments and action sampling.")
flags.DEFINE_integer("n_steps", 5, "t_max: steps per worker segment; one update per segment.", lower_bound=1)
flags.DEFINE_float("learning_rate", 4e-3, "Adam learning rate of the shared optimizer.", lower_bound=0.0)
flags.DEFINE_integer("learning_rate_decay_updates", 6000, "If > 0, decay the learning rate linearly to a tenth of "
                     "--learning_rate over this many updates, then hold it: fewer runs oscillate or collapse before "
                     "solving, and long runs stay solved. 0 keeps it constant.", lower_bound=0)
flags.DEFINE_float("adam_epsilon", 1e-5, "Adam epsilon; above the 1e-7 default it damps the steps once gradients get "
                   "small, which keeps the policy from saturating on a wrong action.", lower_bound=0.0)
flags.DEFINE_float("entropy_coef", 0.02, "beta: weight of the entropy bonus.", lower_bound=0.0)
flags.DEFINE_float("value_coef", 0.5, "Weight of the value loss.", lower_bound=0.0)
flags.DEFINE_float("gamma", 0.98, "Discount factor.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("max_grad_norm", 5.0, "Clip gradients to this global norm (cuts the spikes when the critic is "
                   "thrown off; typical norms are 0.2-6); 0 disables clipping.", lower_bound=0.0)
flags.DEFINE_list("hidden_units", ["64", "64"], "Widths of the shared MLP trunk.")
flags.DEFINE_bool("hogwild", False, "Apply updates lock-free (as in the paper) instead of under a lock.")
flags.DEFINE_float("target_return", 495.0, "Stop once the mean of the last 100 training returns reaches this.")
flags.DEFINE_integer("eval_episodes", 100, "Greedy evaluation episodes after training.", lower_bound=0)
flags.DEFINE_string("export_dir", None, "If set, write the policy here as a TF SavedModel (must not exist).")
flags.DEFINE_string("plot", None, "If set, write learning curves (return vs env steps and vs seconds, with the "
                    "target_return line) to this image: .png, .svg or .pdf.")
flags.DEFINE_integer("steps_per_epoch", 20_000, "Env steps per Keras epoch (one History row).", lower_bound=1)
flags.DEFINE_integer("verbose", 1, "0 silent, 1 progress bar, 2 one line per epoch.", lower_bound=0, upper_bound=2)
flags.DEFINE_string("checkpoint_dir", None, "If set, save the whole training state here as it trains, at the end, "
                    "and on Ctrl-C (directories ckpt-<env step>; the newest `keep_checkpoints` are kept).")
flags.DEFINE_integer("checkpoint_every_steps", 100_000, "Env steps between checkpoints.", lower_bound=1)
flags.DEFINE_float("checkpoint_every_seconds", 60.0, "Seconds between checkpoints (whichever comes first).",
                   lower_bound=0.0)
flags.DEFINE_integer("keep_checkpoints", 3, "How many checkpoints to keep.", lower_bound=1)
flags.DEFINE_bool("resume", False, "Load the newest checkpoint in --checkpoint_dir (if any) and train on from its "
                  "global env step up to --total_steps; the model and optimizer flags are then those saved.")

flags.register_validator("env", lambda env_id: env_id in gymnasium.registry,
                         message="--env is not a registered gymnasium environment id")
flags.register_validator("hidden_units", lambda units: all(u.isdigit() and int(u) > 0 for u in units),
                         message="--hidden_units must be positive integers, e.g. 64,64")
flags.register_validator("plot", lambda path: path is None or path.lower().endswith((".png", ".svg", ".pdf")),
                         message="--plot must name a .png, .svg or .pdf file")
flags.register_validator("export_dir", lambda path: path is None or not os.path.exists(path),
                         message="--export_dir already exists; choose a new directory")
flags.register_validator("checkpoint_dir", lambda path: path is None or not os.path.isfile(path),
                         message="--checkpoint_dir is a file; it must be a directory")
flags.register_multi_flags_validator(["resume", "checkpoint_dir"], lambda f: not f["resume"] or f["checkpoint_dir"],
                                     message="--resume needs --checkpoint_dir")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines out of the progress display
    keras.utils.set_random_seed(FLAGS.seed)
    observation_space, action_space = keras_a3c.envs.env_spaces(FLAGS.env)

    if FLAGS.checkpoint_dir and not FLAGS.resume and keras_a3c.latest_checkpoint(FLAGS.checkpoint_dir):
        raise app.UsageError(f"--checkpoint_dir {FLAGS.checkpoint_dir} holds checkpoints of an earlier run: "
                             "pass --resume to carry on from them, or choose another directory")
    resume_from = keras_a3c.latest_checkpoint(FLAGS.checkpoint_dir) if FLAGS.resume else None
    if resume_from:
        # The saved agent: weights, optimizer slots, counters, episode statistics, RNG state.
        agent = keras_a3c.load(resume_from)
        print(f"resumed from {resume_from} at env step {agent.worker_state.env_steps:,}")
    else:
        # One shared-trunk actor-critic: observation -> (logits, value).
        network = keras_a3c.actor_critic_mlp(
            observation_space, action_space, hidden_units=[int(u) for u in FLAGS.hidden_units]
        )
        agent = keras_a3c.A3C(network)
        learning_rate = FLAGS.learning_rate
        if FLAGS.learning_rate_decay_updates:
            # Keyed on optimizer.iterations, so it carries on across checkpoints and --resume.
            learning_rate = keras.optimizers.schedules.PolynomialDecay(
                FLAGS.learning_rate, FLAGS.learning_rate_decay_updates, FLAGS.learning_rate / 10
            )
        agent.compile(
            optimizer=keras.optimizers.Adam(learning_rate, epsilon=FLAGS.adam_epsilon),
            entropy_coef=FLAGS.entropy_coef,
            value_coef=FLAGS.value_coef,
            gamma=FLAGS.gamma,
            n_steps=FLAGS.n_steps,
            max_grad_norm=FLAGS.max_grad_norm or None,
            hogwild=FLAGS.hogwild,
        )

    callbacks = [keras_a3c.StopOnMeanReturn(FLAGS.target_return)]
    checkpoint = None
    if FLAGS.checkpoint_dir:
        checkpoint = keras_a3c.Checkpoint(FLAGS.checkpoint_dir, every_steps=FLAGS.checkpoint_every_steps,
                                          every_seconds=FLAGS.checkpoint_every_seconds or None,
                                          keep=FLAGS.keep_checkpoints)
        callbacks.append(checkpoint)

    # Train: the workers run asynchronously; callbacks run on this thread.
    first_step = agent.worker_state.env_steps
    remaining = FLAGS.total_steps - first_step
    if remaining <= 0:
        print(f"nothing to train: the checkpoint has {agent.worker_state.env_steps:,} env steps, "
              f"--total_steps is {FLAGS.total_steps:,}")
        return
    start = time.perf_counter()
    try:
        history = agent.fit(
            FLAGS.env,
            total_steps=remaining,
            workers=FLAGS.workers,
            envs_per_worker=FLAGS.envs_per_worker,
            seed=None if resume_from else FLAGS.seed,  # a resumed run carries on the saved RNG
            steps_per_epoch=FLAGS.steps_per_epoch,
            verbose=FLAGS.verbose,
            callbacks=callbacks,
        )
    except KeyboardInterrupt:
        # fit has stopped and joined every worker before the interrupt reaches us.
        if checkpoint is not None:
            print(f"\nsaved the training state to {checkpoint.save(agent)}; resume with --resume", file=sys.stderr)
        print(f"interrupted at env step {agent.worker_state.env_steps:,}", file=sys.stderr)
        sys.exit(130)
    seconds = time.perf_counter() - start
    last = {k: v[-1] for k, v in history.history.items()}
    print(
        f"trained {int(last['env_steps']) - first_step:,} env steps in {seconds:.1f} s "
        f"({last['steps_per_second']:,.0f} steps/s while the workers ran), {int(last['episodes'])} episodes, "
        f"mean return of the last 100: {last['episode_return']:.1f}"
    )

    if FLAGS.plot:
        keras_a3c.plot_history(history, FLAGS.plot, target=FLAGS.target_return)
        print(f"wrote learning curves to {FLAGS.plot}")

    # Evaluate the greedy policy.
    if FLAGS.eval_episodes:
        mean, std = agent.evaluate(FLAGS.env, episodes=FLAGS.eval_episodes, deterministic=True)
        print(f"greedy policy over {FLAGS.eval_episodes} episodes: return {mean:.1f} +/- {std:.1f}")

    # Export: a SavedModel with a `serve` endpoint, loadable without keras_a3c.
    if FLAGS.export_dir:
        agent.export(FLAGS.export_dir)
        print(f"exported the policy to {FLAGS.export_dir}")


if __name__ == "__main__":
    app.run(main)
