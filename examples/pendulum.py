"""Train A3C with a Gaussian policy on Pendulum-v1, evaluate the mean action, export.

    python examples/pendulum.py --flagfile=flags/pendulum.flags --export_dir=/tmp/pendulum_policy

Pendulum's action is a torque in [-2, 2]. The policy is a diagonal Gaussian whose
mean is a linear head on a shared trunk; the sampled torque is clipped to the bounds
when the env is stepped, and the loss uses the log-probability of the unclipped sample.
Training stops at `total_steps` or once the mean return of the last 100 training
episodes reaches `target_return`; the deterministic policy (the mean action, clipped)
is then evaluated and exported.
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
flags.DEFINE_string("env", "Pendulum-v1", "Gymnasium environment id (Box observations, Box actions).")
flags.DEFINE_integer("workers", 8, "Asynchronous actor-learner threads sharing one model.", lower_bound=1)
flags.DEFINE_integer("envs_per_worker", 16, "Environments each worker steps as one batch.", lower_bound=1)
flags.DEFINE_integer("total_steps", 3_000_000, "Environment steps to train for, summed over workers.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed for weights, environments and action sampling.")
flags.DEFINE_integer("n_steps", 8, "t_max: steps per worker segment; one update per segment.", lower_bound=1)
flags.DEFINE_float("learning_rate", 3e-4, "Adam learning rate of the shared optimizer.", lower_bound=0.0)
flags.DEFINE_float("entropy_coef", 0.0, "beta: weight of the (differential) entropy bonus.", lower_bound=0.0)
flags.DEFINE_float("value_coef", 0.5, "Weight of the value loss.", lower_bound=0.0)
flags.DEFINE_float("reward_scale", 0.1, "The learner trains on reward_scale * reward (logged returns are unscaled).",
                   lower_bound=0.0)
flags.DEFINE_float("gamma", 0.9, "Discount factor.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("max_grad_norm", 0.5, "Clip gradients to this global norm; 0 disables clipping.", lower_bound=0.0)
flags.DEFINE_list("hidden_units", ["64", "64"], "Widths of the shared MLP trunk.")
flags.DEFINE_enum("std", "state_independent", ["state_independent", "softplus"],
                  "Gaussian std: one learned log std per action dimension, or the A3C paper's softplus variance head.")
flags.DEFINE_float("log_std_init", 0.0, "Initial log std of the Gaussian policy.")
flags.DEFINE_bool("hogwild", False, "Apply updates lock-free (as in the paper) instead of under a lock.")
flags.DEFINE_float("target_return", -175.0, "Stop once the mean of the last 100 training returns reaches this.")
flags.DEFINE_integer("eval_episodes", 20, "Deterministic (mean-action) evaluation episodes after training.",
                     lower_bound=0)
flags.DEFINE_string("export_dir", None, "If set, write the policy here as a TF SavedModel (must not exist).")
flags.DEFINE_string("plot", None, "If set, write learning curves (return vs env steps and vs seconds, with the "
                    "target_return line) to this image: .png, .svg or .pdf.")
flags.DEFINE_integer("steps_per_epoch", 50_000, "Env steps per Keras epoch (one History row).", lower_bound=1)
flags.DEFINE_integer("verbose", 1, "0 silent, 1 progress bar, 2 one line per epoch.", lower_bound=0, upper_bound=2)

flags.register_validator("env", lambda env_id: env_id in gymnasium.registry,
                         message="--env is not a registered gymnasium environment id")
flags.register_validator("hidden_units", lambda units: all(u.isdigit() and int(u) > 0 for u in units),
                         message="--hidden_units must be positive integers, e.g. 64,64")
flags.register_validator("plot", lambda path: path is None or path.lower().endswith((".png", ".svg", ".pdf")),
                         message="--plot must name a .png, .svg or .pdf file")
flags.register_validator("export_dir", lambda path: path is None or not os.path.exists(path),
                         message="--export_dir already exists; choose a new directory")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines out of the progress display
    keras.utils.set_random_seed(FLAGS.seed)
    observation_space, action_space = keras_a3c.envs.env_spaces(FLAGS.env)

    # One shared-trunk actor-critic: observation -> (concat(mean, log_std), value).
    network = keras_a3c.actor_critic_mlp(
        observation_space, action_space, hidden_units=[int(u) for u in FLAGS.hidden_units],
        std=FLAGS.std, log_std_init=FLAGS.log_std_init,
    )
    agent = keras_a3c.A3C(network, action_space=action_space)
    agent.compile(
        optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
        entropy_coef=FLAGS.entropy_coef,
        value_coef=FLAGS.value_coef,
        gamma=FLAGS.gamma,
        n_steps=FLAGS.n_steps,
        max_grad_norm=FLAGS.max_grad_norm or None,
        hogwild=FLAGS.hogwild,
        reward_scale=FLAGS.reward_scale,
    )

    start = time.perf_counter()
    history = agent.fit(
        FLAGS.env,
        total_steps=FLAGS.total_steps,
        workers=FLAGS.workers,
        envs_per_worker=FLAGS.envs_per_worker,
        seed=FLAGS.seed,
        steps_per_epoch=FLAGS.steps_per_epoch,
        verbose=FLAGS.verbose,
        callbacks=[keras_a3c.StopOnMeanReturn(FLAGS.target_return)],
    )
    seconds = time.perf_counter() - start
    last = {k: v[-1] for k, v in history.history.items()}
    print(
        f"trained {int(last['env_steps']):,} env steps in {seconds:.1f} s "
        f"({last['steps_per_second']:,.0f} steps/s while the workers ran), {int(last['episodes'])} episodes, "
        f"mean return of the last 100: {last['episode_return']:.1f}"
    )

    if FLAGS.plot:
        keras_a3c.plot_history(history, FLAGS.plot, target=FLAGS.target_return)
        print(f"wrote learning curves to {FLAGS.plot}")

    if FLAGS.eval_episodes:
        mean, std = agent.evaluate(FLAGS.env, episodes=FLAGS.eval_episodes, deterministic=True)
        print(f"deterministic policy over {FLAGS.eval_episodes} episodes: return {mean:.1f} +/- {std:.1f}")

    # Export: `serve` maps float32 observations [batch, 3] to float32 torques [batch, 1] in [-2, 2].
    if FLAGS.export_dir:
        agent.export(FLAGS.export_dir)
        print(f"exported the policy to {FLAGS.export_dir}")


if __name__ == "__main__":
    app.run(main)
