"""The n-step segment a worker hands to the learner, packed into one float32 array.

Binding each input of a `tf.function` call costs ~50 us of Python, several times the
cost of the small matmuls of an A3C update, so the six arrays of a segment travel as
one tensor [T+1, B, F] and are unpacked inside the compiled train step. Columns:

    observation (flattened, obs_size) | action (action_size) | reward | terminated | truncated | valid

Rows 0..T-1 are the steps of the segment; row T holds only the bootstrap observation
s_{t+T}. Actions are stored as float32: exact for Discrete indices below 2**24.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf


class SegmentLayout:
    """Column layout of a packed segment for observations of `obs_shape` and actions
    of `action_shape` (() for Discrete, (D,) for Box) with dtype `action_dtype`."""

    def __init__(self, obs_shape: Sequence[int], action_shape: Sequence[int], action_dtype: tf.DType):
        self.obs_shape = tuple(obs_shape)
        self.action_shape = tuple(action_shape)
        self.action_dtype = tf.as_dtype(action_dtype)
        self.obs_size = math.prod(self.obs_shape)
        self.action_size = math.prod(self.action_shape)
        a = self.obs_size + self.action_size
        self.observation = slice(0, self.obs_size)
        self.action = slice(self.obs_size, a)
        self.reward, self.terminated, self.truncated, self.valid = a, a + 1, a + 2, a + 3
        self.width = a + 4

    def empty(self, horizon: int, batch: int) -> np.ndarray:
        """A zeroed segment buffer [horizon + 1, batch, width] float32."""
        return np.zeros((horizon + 1, batch, self.width), np.float32)

    def spec(self, horizon: int, batch: int) -> tf.TensorSpec:
        return tf.TensorSpec([horizon + 1, batch, self.width], tf.float32)

    def unpack(self, segment: tf.Tensor) -> dict[str, tf.Tensor]:
        """[T+1, B, F] -> the segment as the learner takes it (see `Learner.update`): observations
        [T+1, B, *obs], actions [T, B, *action], rewards [T, B], terminated / truncated / valid [T, B] bool."""
        horizon, batch = segment.shape[0] - 1, segment.shape[1]
        steps = segment[:horizon]
        return {
            "observations": tf.reshape(segment[:, :, self.observation], [horizon + 1, batch, *self.obs_shape]),
            "actions": tf.cast(
                tf.reshape(steps[:, :, self.action], [horizon, batch, *self.action_shape]), self.action_dtype
            ),
            "rewards": steps[:, :, self.reward],
            "terminated": steps[:, :, self.terminated] > 0.5,
            "truncated": steps[:, :, self.truncated] > 0.5,
            "valid": steps[:, :, self.valid] > 0.5,
        }
