"""Train A3C from pixels on Atari 2600 games (the A3C paper's network and preprocessing), evaluate, export.

    pip install ale-py==0.12.1 opencv-python-headless==5.0.0.93   # the games (ROMs bundled) and frame resizing
    python examples/atari.py --env AtariA3C/Pong-v5 --checkpoint_dir /tmp/pong_run     # Ctrl-C, then:
    python examples/atari.py --env AtariA3C/Pong-v5 --checkpoint_dir /tmp/pong_run --resume
    python examples/play.py --policy /tmp/pong_policy --env atari_env:AtariA3C/Pong-v5 --episodes 5

`examples/atari_env.py` registers `AtariA3C/<Game>-v5` for every `ALE/<Game>-v5` game: 84x84 greyscale,
frame skip 4 (max of the last two frames), 4 stacked frames as a uint8 [84, 84, 4] image, up to 30 no-op
starts. The network is the paper's (`keras_a3c.actor_critic_cnn(..., "atari")`: Conv 16 8x8 stride 4,
Conv 32 4x4 stride 2, Dense 256, ReLU), which takes the uint8 frames and scales them by 1/255 inside,
so the exported policy takes the frames as they are. The update is the paper's: n-step returns of 5
steps, entropy 0.01, rewards clipped to [-1, 1] for learning (`--clip_raw_rewards=1`; the logged returns
are the game's score), RMSProp 7e-4. Learning Pong takes hours on 2 cores: train with `--checkpoint_dir`
(a checkpoint every `--checkpoint_every_seconds`, and on Ctrl-C) and carry on with `--resume`.
The flags' defaults are `keras_a3c.presets.ATARI` (`flags/atari.flags`).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402
from absl import app  # noqa: E402

try:
    import atari_env  # noqa: F401  (registers AtariA3C/<Game>-v5)
except ImportError as error:
    raise SystemExit("examples/atari.py needs ale-py and OpenCV: pip install ale-py==0.12.1 "
                     "opencv-python-headless==5.0.0.93") from error

import keras_a3c  # noqa: E402

common.define_flags(keras_a3c.presets.ATARI)


def main(argv):
    del argv
    settings = common.settings()
    # With --resume: the agent of the newest checkpoint (weights, optimizer, counters).
    agent = common.resume()
    if agent is None:
        observation_space, action_space = keras_a3c.envs.env_spaces(settings.env)
        # keras_a3c.actor_critic_cnn(observation_space, action_space, "atari"): uint8 frames -> (logits, value).
        network = settings.make_network(observation_space, action_space)
        agent = keras_a3c.A3C(network)
        agent.compile(optimizer=settings.make_optimizer(), config=settings.config)

    # Train: the workers run asynchronously; callbacks (progress, checkpoints) run on this thread.
    if common.train(agent, settings) is None:
        return
    # Evaluate the greedy policy; export: `serve` maps uint8 frames [batch, 84, 84, 4] to actions [batch].
    common.evaluate_and_export(agent, settings)


if __name__ == "__main__":
    app.run(main)
