"""Train A3C with a Gaussian policy on Pendulum-v1, evaluate the mean action, export.

    python examples/pendulum.py --flagfile=flags/pendulum.flags --export_dir=/tmp/pendulum_policy
    python examples/pendulum.py --checkpoint_dir /tmp/pendulum_run            # Ctrl-C, then:
    python examples/pendulum.py --checkpoint_dir /tmp/pendulum_run --resume

Pendulum's action is a torque in [-2, 2]. The policy is a diagonal Gaussian whose
mean is a linear head on a shared trunk; the sampled torque is clipped to the bounds
when the env is stepped, and the loss uses the log-probability of the unclipped sample.
Training stops at `total_steps` or once the mean return of the last 100 training
episodes reaches `target_return`; the deterministic policy (the mean action, clipped)
is then evaluated and exported. Checkpoints and `--resume` work as in `cartpole.py`.
The flags' defaults are `keras_a3c.presets.PENDULUM` (`flags/pendulum.flags`).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402
from absl import app  # noqa: E402

import keras_a3c  # noqa: E402

common.define_flags(keras_a3c.presets.PENDULUM)


def main(argv):
    del argv
    settings = common.settings()
    # With --resume: the agent of the newest checkpoint (weights, optimizer, counters).
    agent = common.resume()
    if agent is None:
        observation_space, action_space = keras_a3c.envs.env_spaces(settings.env)
        # One shared-trunk actor-critic: observation -> (concat(mean, log_std), value); with --network=mlp,
        # keras_a3c.actor_critic_mlp(observation_space, action_space, hidden_units=..., std=..., log_std_init=...).
        network = settings.make_network(observation_space, action_space)
        agent = keras_a3c.A3C(network, action_space=action_space)
        agent.compile(optimizer=settings.make_optimizer(), config=settings.config)

    # Train: the workers run asynchronously; callbacks (progress, checkpoints) run on this thread.
    if common.train(agent, settings) is None:
        return
    # Evaluate the mean action; export: `serve` maps float32 observations [batch, 3] to torques [batch, 1] in [-2, 2].
    common.evaluate_and_export(agent, settings)


if __name__ == "__main__":
    app.run(main)
