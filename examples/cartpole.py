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
to `total_steps`. The flags' defaults are `keras_a3c.presets.CARTPOLE` (`flags/cartpole.flags`).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402
from absl import app  # noqa: E402

import keras_a3c  # noqa: E402

common.define_flags(keras_a3c.presets.CARTPOLE)


def main(argv):
    del argv
    settings = common.settings()
    # With --resume: the agent of the newest checkpoint (weights, optimizer, counters).
    agent = common.resume()
    if agent is None:
        observation_space, action_space = keras_a3c.envs.env_spaces(settings.env)
        # One shared-trunk actor-critic: observation -> (logits, value); with the preset's --network=mlp,
        # keras_a3c.actor_critic_mlp(observation_space, action_space, hidden_units=..., normalize_observations=...).
        network = settings.make_network(observation_space, action_space)
        agent = keras_a3c.A3C(network)
        agent.compile(optimizer=settings.make_optimizer(), config=settings.config)

    # Train: the workers run asynchronously; callbacks (progress, checkpoints) run on this thread.
    if common.train(agent, settings) is None:
        return
    # Evaluate the greedy policy; export a SavedModel with a `serve` endpoint, loadable without keras_a3c.
    common.evaluate_and_export(agent, settings)


if __name__ == "__main__":
    app.run(main)
