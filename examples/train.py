"""Train A3C on any gymnasium task with the library's defaults, evaluate, export.

    python examples/train.py --env Acrobot-v1 --total_steps 500000
    python examples/train.py --env LunarLander-v3 --total_steps 3000000 --export_dir /tmp/lander
    python examples/train.py --env Pendulum-v1 --total_steps 3000000 --checkpoint_dir /tmp/pendulum_run

The flags' defaults are the library's (`keras_a3c.presets.DEFAULTS`: `A3CConfig()`, RMSprop 7e-4,
`actor_critic_mlp` with observation normalisation, 8 workers x 8 envs), the same for every task:
rewards and observations are normalised as the agent trains, so no per-task reward scale is needed.
Discrete actions get a categorical policy, Box actions a Gaussian one. Checkpoints, `--resume`,
`--plot` and Ctrl-C work as in `cartpole.py`. LunarLander needs `pip install "gymnasium[box2d]"`.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402
from absl import app  # noqa: E402

import keras_a3c  # noqa: E402

common.define_flags(keras_a3c.presets.DEFAULTS)


def main(argv):
    del argv
    settings = common.settings()
    # With --resume: the agent of the newest checkpoint (weights, optimizer, counters).
    agent = common.resume()
    if agent is None:
        observation_space, action_space = keras_a3c.envs.env_spaces(settings.env)
        # One shared-trunk actor-critic: keras_a3c.actor_critic_mlp (its first layer normalises the observations),
        # or with --network=atari / minatar keras_a3c.actor_critic_cnn for image observations.
        network = settings.make_network(observation_space, action_space)
        agent = keras_a3c.A3C(network, action_space=action_space)
        agent.compile(optimizer=settings.make_optimizer(), config=settings.config)

    # Train: the workers run asynchronously; callbacks (progress, checkpoints) run on this thread.
    if common.train(agent, settings) is None:
        return
    # Evaluate the deterministic policy; export a SavedModel that takes raw observations.
    common.evaluate_and_export(agent, settings)


if __name__ == "__main__":
    app.run(main)
