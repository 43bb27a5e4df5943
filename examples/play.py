"""Run an exported policy (a SavedModel from `A3C.export`) in a gymnasium env.

    python examples/play.py --policy /tmp/cartpole_policy --env CartPole-v1 --episodes 10
    python examples/play.py --policy /tmp/cartpole_policy --episodes 1 --gif cartpole.gif
    python examples/play.py --policy /tmp/breakout_policy --env MinAtar/Breakout-v1 --episodes 20
    python examples/play.py --policy /tmp/memory_policy --env memory_env:CartPoleNoVelocity-v1 --episodes 20

A recurrent policy (one exported with an `initial_state` endpoint) carries its state through each
episode: `initial_state(1)` at the start, then `serve(observation, state) -> (action, state)`.
`--env module:id` imports `module` first (gymnasium's syntax), for envs a module registers.

Prints the return of each episode, then their mean. Needs only TensorFlow and gymnasium
(and Pillow for --gif, which matplotlib installs): keras_a3c is not imported.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# rgb_array rendering draws off-screen; without a display SDL would complain on stderr.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

if TYPE_CHECKING:
    from PIL import Image

FLAGS = flags.FLAGS
flags.DEFINE_string("policy", None, "Directory of the exported SavedModel.", required=True)
flags.DEFINE_string("env", "CartPole-v1", "Gymnasium environment id.")
flags.DEFINE_integer("episodes", 10, "Episodes to play.", lower_bound=1)
flags.DEFINE_integer("seed", 10_000, "Seed of the first episode; episode i uses seed + i.")
flags.DEFINE_bool("quiet", False, "Print only the summary line.")
flags.DEFINE_string("gif", None, "If set, record the first episode (rendered as rgb_array) to this .gif file.")

flags.register_validator("gif", lambda path: path is None or path.lower().endswith(".gif"),
                         message="--gif must name a .gif file")
flags.register_validator("gif", lambda path: path is None or os.path.isdir(os.path.dirname(os.path.abspath(path))),
                         message="--gif: the directory of the file does not exist")


def gif_frame(rgb: np.ndarray) -> Image.Image:
    """An 8-bit palette image, as GIF stores it: a third of the memory of the RGB frame.
    Fast octree quantization takes a few ms a frame, Pillow's default median cut ~20 ms."""
    from PIL import Image  # only --gif needs Pillow

    return Image.fromarray(rgb).quantize(256, method=Image.Quantize.FASTOCTREE)


def save_gif(frames: list[Image.Image], path: str, fps: float) -> None:
    # GIF delays are in ms; browsers slow down delays under 20 ms.
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=max(20, round(1000 / fps)), loop=0)


def batch_of_one(observation):
    """One observation as a batch of one, in its structure (a Dict or Tuple observation: one tensor per
    entry): a Discrete entry (an integer) as int32, anything else as float32."""
    if isinstance(observation, dict):
        return {key: batch_of_one(value) for key, value in observation.items()}
    if isinstance(observation, tuple):
        return tuple(batch_of_one(value) for value in observation)
    x = np.asarray(observation)
    return tf.constant(x[None], tf.int32 if x.ndim == 0 and np.issubdtype(x.dtype, np.integer) else tf.float32)


def main(argv):
    del argv
    policy = tf.saved_model.load(FLAGS.policy)
    if FLAGS.env.startswith("MinAtar/") and FLAGS.env not in gym.registry:  # MinAtar registers its ids on request
        from minatar.gym import register_envs
        register_envs()
    env = gym.make(FLAGS.env, render_mode="rgb_array" if FLAGS.gif else None)
    recurrent = hasattr(policy, "initial_state")
    returns, frames = [], []
    for episode in range(FLAGS.episodes):
        obs, _ = env.reset(seed=FLAGS.seed + episode)
        state = policy.initial_state(tf.constant(1, tf.int32)) if recurrent else None
        recording = FLAGS.gif is not None and episode == 0
        total, done = 0.0, False
        while not done:
            if recording:
                frames.append(gif_frame(env.render()))
            if recurrent:
                actions, state = policy.serve(batch_of_one(obs), state)
            else:
                actions = policy.serve(batch_of_one(obs))
            action = actions.numpy()[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        if recording:
            frames.append(gif_frame(env.render()))  # the final state
        returns.append(total)
        if not FLAGS.quiet:
            print(f"episode {episode + 1}: return {total:.1f}")
    if FLAGS.gif:
        save_gif(frames, FLAGS.gif, env.metadata.get("render_fps") or 30)
        print(f"recorded episode 1 ({len(frames)} frames) to {FLAGS.gif}")
    print(f"{FLAGS.episodes} episodes: mean return {np.mean(returns):.1f} +/- {np.std(returns):.1f}")


if __name__ == "__main__":
    app.run(main)
