"""Train A3C from pixels on MinAtar (Young & Tian 2019): 10x10 images of Atari-like games, evaluate, export.

    pip install minatar==1.0.15        # GPL-3.0: an optional dependency of this example, not of keras_a3c
    python examples/minatar_a3c.py --flagfile=flags/minatar.flags --export_dir=/tmp/breakout_policy
    python examples/minatar_a3c.py --env MinAtar/SpaceInvaders-v1 --checkpoint_dir /tmp/invaders_run
    python examples/play.py --policy /tmp/breakout_policy --env MinAtar/Breakout-v1 --episodes 20

An observation is a [10, 10, C] bool image (one channel per kind of object). The network is the MinAtar
paper's (`keras_a3c.actor_critic_cnn(..., "minatar")`: Conv 16 3x3 stride 1, Dense 128, ReLU) and takes
the bool image itself, so the exported policy does too. Each of the 8 workers steps 2 envs as one batch;
the learning rate and the entropy bonus decay linearly to a tenth over the 10M env steps.
(The file is not called minatar.py: run as a script, it would shadow the minatar package.)
The flags' defaults are `keras_a3c.presets.MINATAR` (`flags/minatar.flags`); checkpoints, `--resume`,
`--plot` and Ctrl-C work as in `cartpole.py`.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402
from absl import app  # noqa: E402

import keras_a3c  # noqa: E402

try:  # MinAtar registers its gymnasium ids (MinAtar/Breakout-v1, ...) on request.
    from minatar.gym import register_envs
except ImportError as error:
    raise SystemExit("examples/minatar_a3c.py needs MinAtar: pip install minatar==1.0.15") from error
register_envs()

common.define_flags(keras_a3c.presets.MINATAR)


def main(argv):
    del argv
    settings = common.settings()
    # With --resume: the agent of the newest checkpoint (weights, optimizer, counters).
    agent = common.resume()
    if agent is None:
        observation_space, action_space = keras_a3c.envs.env_spaces(settings.env)
        # keras_a3c.actor_critic_cnn(observation_space, action_space, "minatar"): bool images -> (logits, value).
        network = settings.make_network(observation_space, action_space)
        agent = keras_a3c.A3C(network)
        agent.compile(optimizer=settings.make_optimizer(), config=settings.config)

    # Train: the workers run asynchronously; callbacks (progress, checkpoints) run on this thread.
    if common.train(agent, settings) is None:
        return
    # Evaluate the greedy policy; export: `serve` maps bool observations [batch, 10, 10, C] to actions [batch].
    common.evaluate_and_export(agent, settings)


if __name__ == "__main__":
    app.run(main)
