"""Run an exported policy (a SavedModel from `A3C.export`) in a gymnasium env.

    python examples/play.py --policy /tmp/cartpole_policy --env CartPole-v1 --episodes 100

Needs only TensorFlow and gymnasium: keras_a3c is not imported.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("policy", None, "Directory of the exported SavedModel.", required=True)
flags.DEFINE_string("env", "CartPole-v1", "Gymnasium environment id.")
flags.DEFINE_integer("episodes", 10, "Episodes to play.", lower_bound=1)
flags.DEFINE_integer("seed", 10_000, "Seed of the first episode; episode i uses seed + i.")
flags.DEFINE_bool("quiet", False, "Print only the summary line.")


def main(argv):
    del argv
    policy = tf.saved_model.load(FLAGS.policy)
    env = gym.make(FLAGS.env)
    returns = []
    for episode in range(FLAGS.episodes):
        obs, _ = env.reset(seed=FLAGS.seed + episode)
        total, done = 0.0, False
        while not done:
            action = policy.serve(tf.constant(obs[None], tf.float32)).numpy()[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        if not FLAGS.quiet:
            print(f"episode {episode + 1}: return {total:.1f}")
    print(f"{FLAGS.episodes} episodes: mean return {np.mean(returns):.1f} +/- {np.std(returns):.1f}")


if __name__ == "__main__":
    app.run(main)
