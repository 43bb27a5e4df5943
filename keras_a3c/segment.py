"""The n-step segment a worker hands to the learner, packed into as few arrays as its dtypes allow.

Binding each input of a `tf.function` call costs ~50 us of Python, several times the
cost of the small matmuls of an A3C update, so the six parts of a segment travel as one
float32 tensor [T+1, B, F] and are unpacked inside the compiled train step. Columns:

    float32 observation row (obs_size) | action (action_size) | behaviour params (params_size) | reward |
    terminated | truncated | valid

Observations of other storage dtypes (see `keras_a3c.observations`: a uint8 image, a Discrete
index) travel in one more array [T+1, B, F_g] per dtype, in that dtype. Rows 0..T-1 are the
steps of the segment; row T holds only the bootstrap observation s_{t+T}. Actions are stored as
float32: exact for Discrete indices below 2**24. A recurrent network's segment ends with one more
float32 array [B, S]: the state its first step was taken with (see `keras_a3c.recurrent`). The
behaviour params (the policy params mu the worker sampled each action from) are stored only for an
update that corrects for policy lag (`A3CConfig.importance_clip`); otherwise params_size is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf


class SegmentLayout:
    """Layout of a segment for observation rows of `observation_rows` ((size, dtype) per storage dtype,
    as `ObservationCodec.row_layout` gives them) and actions of `action_shape` (() for Discrete,
    (D,) for Box) with dtype `action_dtype`, a recurrent state of parts [B, S_i] (`state_sizes`, none
    for a feedforward network), and `params_size` columns of behaviour policy params (0: none)."""

    def __init__(self, observation_rows: Sequence[tuple[int, np.dtype]], action_shape: Sequence[int],
                 action_dtype: tf.DType, state_sizes: Sequence[int] = (), params_size: int = 0):
        self.observation_rows = [(int(size), np.dtype(dtype)) for size, dtype in observation_rows]
        self.action_shape = tuple(action_shape)
        self.action_dtype = tf.as_dtype(action_dtype)
        # A float32 row shares the packed array; each other row is an array of its own.
        packed = [size for size, dtype in self.observation_rows if dtype == np.float32]
        self.obs_size = packed[0] if packed else 0
        self.action_size = math.prod(self.action_shape)
        self.params_size = int(params_size)
        self.observation = slice(0, self.obs_size)
        self.action = slice(self.obs_size, self.obs_size + self.action_size)
        self.behaviour_params = slice(self.action.stop, self.action.stop + self.params_size)
        a = self.behaviour_params.stop
        self.reward, self.terminated, self.truncated, self.valid = a, a + 1, a + 2, a + 3
        self.width = a + 4
        self.state_sizes = tuple(int(size) for size in state_sizes)
        self.state_size = sum(self.state_sizes)

    def empty(self, horizon: int, batch: int) -> list[np.ndarray]:
        """A zeroed segment: the packed float32 array [horizon + 1, batch, width], then one array
        [horizon + 1, batch, F_g] per observation row of another dtype, then a recurrent network's initial
        state [batch, S]."""
        return [np.zeros((horizon + 1, batch, self.width), np.float32)] + [
            np.zeros((horizon + 1, batch, size), dtype) for size, dtype in self.observation_rows
            if dtype != np.float32] + ([np.zeros((batch, self.state_size), np.float32)] if self.state_size else [])

    def nbytes(self, horizon: int, batch: int) -> int:
        """The memory of one segment (the arrays of `empty`), in bytes."""
        other = sum(size * dtype.itemsize for size, dtype in self.observation_rows if dtype != np.float32)
        return (horizon + 1) * batch * (4 * self.width + other) + 4 * batch * self.state_size

    def observation_views(self, segment: Sequence) -> list:
        """The observation rows of a segment [T+1, B, F_g], in the order of `observation_rows` (views
        of a numpy segment, slices of a tensor one)."""
        extra = iter(segment[1:])
        return [segment[0][:, :, self.observation] if dtype == np.float32 else next(extra)
                for _, dtype in self.observation_rows]

    def specs(self, horizon: int, batch: int) -> list[tf.TensorSpec]:
        return [tf.TensorSpec([horizon + 1, batch, self.width], tf.float32)] + [
            tf.TensorSpec([horizon + 1, batch, size], dtype) for size, dtype in self.observation_rows
            if dtype != np.float32] + ([tf.TensorSpec([batch, self.state_size], tf.float32)] if self.state_size else [])

    def unpack(self, segment: Sequence[tf.Tensor]) -> dict:
        """The arrays of a segment -> the segment as the learner takes it (see `Learner.update`):
        observation rows (a list of [T+1, B, F_g]), actions [T, B, *action], rewards [T, B],
        terminated / truncated / valid [T, B] bool; for a recurrent network its initial state (a list of
        [B, S_i]); with behaviour params, behaviour_params [T, B, params_size]."""
        packed = segment[0]
        horizon, batch = packed.shape[0] - 1, packed.shape[1]
        steps = packed[:horizon]
        return {
            "observations": self.observation_views(segment),
            "actions": tf.cast(
                tf.reshape(steps[:, :, self.action], [horizon, batch, *self.action_shape]), self.action_dtype
            ),
            "rewards": steps[:, :, self.reward],
            "terminated": steps[:, :, self.terminated] > 0.5,
            "truncated": steps[:, :, self.truncated] > 0.5,
            "valid": steps[:, :, self.valid] > 0.5,
            **({"initial_state": tf.split(segment[-1], self.state_sizes, axis=1)} if self.state_size else {}),
            **({"behaviour_params": steps[:, :, self.behaviour_params]} if self.params_size else {}),
        }
