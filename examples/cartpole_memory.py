"""Train a recurrent A3C policy (A3C LSTM) on CartPole-v1 with the velocities hidden, evaluate, export.

    python examples/cartpole_memory.py --export_dir /tmp/memory_policy
    python examples/cartpole_memory.py --lstm_units 0           # the feedforward network, for comparison
    python examples/play.py --policy /tmp/memory_policy --env memory_env:CartPoleNoVelocity-v1 --episodes 20

The observation is the cart position and the pole angle only (`examples/memory_env.py`): the
velocities must be inferred from the observations seen so far. The network is the defaults' MLP
with an LSTM cell of `--lstm_units` between the trunk and the heads; each worker carries the LSTM
state of each of its envs from step to step (zeroed when an episode begins), the learner replays
each segment from the state it began with and backpropagates through its `n_steps` steps. The
exported SavedModel carries the state explicitly: `initial_state(batch_size)` and
`serve(observations, state) -> (actions, new_state)`. The flags' defaults are
`keras_a3c.presets.CARTPOLE_MEMORY` (`flags/cartpole_memory.flags`).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402
import memory_env  # noqa: E402,F401  (registers CartPoleNoVelocity-v1)
from absl import app  # noqa: E402

import keras_a3c  # noqa: E402

common.define_flags(keras_a3c.presets.CARTPOLE_MEMORY)


def main(argv):
    del argv
    settings = common.settings()
    # With --resume: the agent of the newest checkpoint (weights, optimizer, counters).
    agent = common.resume()
    if agent is None:
        observation_space, action_space = keras_a3c.envs.env_spaces(settings.env)
        # keras_a3c.actor_critic_mlp(..., lstm_units=64): [observation, h, c] -> [logits, value, h', c'].
        network = settings.make_network(observation_space, action_space)
        agent = keras_a3c.A3C(network, action_space=action_space)
        agent.compile(optimizer=settings.make_optimizer(), config=settings.config)

    # Train: each worker carries its envs' LSTM states from segment to segment.
    if common.train(agent, settings) is None:
        return
    # Evaluate the greedy policy (its state carried through each episode); export a SavedModel with state.
    common.evaluate_and_export(agent, settings)


if __name__ == "__main__":
    app.run(main)
