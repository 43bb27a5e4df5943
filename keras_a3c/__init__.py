"""keras_a3c: asynchronous advantage actor-critic (A3C) for Keras 3 on TensorFlow."""

import os

# The train step uses tf.GradientTape: Keras must run on the TensorFlow backend.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_a3c import losses, presets  # noqa: E402
from keras_a3c.agent import A3C, load  # noqa: E402
from keras_a3c.callbacks import Checkpoint, ProgressLogger, StopOnMeanReturn  # noqa: E402
from keras_a3c.config import A3CConfig  # noqa: E402
from keras_a3c.envs import ActionMaskFromInfo  # noqa: E402
from keras_a3c.evaluation import evaluate_policy  # noqa: E402
from keras_a3c.networks import actor_critic_cnn, actor_critic_mlp, check_network  # noqa: E402
from keras_a3c.plot import plot_history  # noqa: E402
from keras_a3c.ray_backend import RayBackend  # noqa: E402
from keras_a3c.saving import latest_checkpoint  # noqa: E402

__all__ = [
    "A3C",
    "A3CConfig",
    "ActionMaskFromInfo",
    "Checkpoint",
    "ProgressLogger",
    "RayBackend",
    "StopOnMeanReturn",
    "actor_critic_cnn",
    "actor_critic_mlp",
    "check_network",
    "evaluate_policy",
    "latest_checkpoint",
    "load",
    "losses",
    "plot_history",
    "presets",
]
__version__ = "0.1.0"
