"""Normalisation of what the learner sees: rewards (by the running std of the discounted return)
and observations (a Keras layer, so an exported policy takes raw observations).

Both keep running statistics merged batch by batch with the parallel algorithm of Chan, Golub and
LeVeque (1979): the workers' batches arrive in any order and the merged mean and variance are
those of all the data seen.
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import tensorflow as tf


def merge_moments(mean, var, count, batch_mean, batch_var, batch_count):
    """The mean, variance and count of two samples given by their moments (Chan et al. 1979);
    works on numpy arrays and on tensors alike."""
    total = count + batch_count
    delta = batch_mean - mean
    new_mean = mean + delta * (batch_count / total)
    m2 = var * count + batch_var * batch_count + delta * delta * (count * batch_count / total)
    return new_mean, m2 / total, total


def merge_samples(first: tuple, second: tuple) -> tuple:
    """The (mean, var, count) of two samples given as (mean, var, count); a sample of count 0 is no data."""
    if first[2] == 0:
        return second
    if second[2] == 0:
        return first
    return merge_moments(*first, *second)


class RewardNormalizer:
    """Scales rewards by 1 / std of the discounted return, as `VecNormalize(norm_reward=True)` does.

    Each worker keeps, per env, the discounted return of the episode so far,
    G_t = gamma * G_{t-1} + r_t (0 at an episode start), and after each segment merges the G_t of
    its valid steps into the shared statistics (`update`, under `lock`), then divides the segment's
    rewards by sqrt(var + epsilon) and clips them to [-clip, clip]. The statistics live as long as
    the agent and are saved with it.
    """

    def __init__(self, gamma: float, clip: float | None = 10.0, epsilon: float = 1e-8):
        self.gamma = gamma
        self.clip = clip
        self.epsilon = epsilon
        self.lock = threading.Lock()
        # VecNormalize starts from var 1 with a count of 1e-4: the first batch sets the scale.
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, discounted_returns: np.ndarray) -> float:
        """Merge a batch of discounted returns [N] into the statistics; returns the new scale 1 / std."""
        if len(discounted_returns):
            batch = np.asarray(discounted_returns, np.float64)
            self.merge(float(batch.mean()), float(batch.var()), len(batch))
        return self.scale()

    def merge(self, mean: float, var: float, count: float) -> None:
        """Merge a sample of discounted returns given by its moments into the statistics."""
        with self.lock:
            self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, mean, var, count)

    def moments(self) -> tuple[float, float, float]:
        """(mean, var, count) of the discounted returns seen."""
        with self.lock:
            return self.mean, self.var, self.count

    def set_moments(self, mean: float, var: float, count: float) -> None:
        with self.lock:
            self.mean, self.var, self.count = mean, var, count

    def scale(self) -> float:
        return 1.0 / float(np.sqrt(self.var + self.epsilon))

    def normalize(self, rewards: np.ndarray, scale: float) -> np.ndarray:
        """rewards * scale, clipped (in place when `rewards` is a float array)."""
        np.multiply(rewards, scale, out=rewards)
        if self.clip is not None:
            np.clip(rewards, -self.clip, self.clip, out=rewards)
        return rewards

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"reward_norm_moments": np.array(self.moments(), np.float64)}

    def load_state_dict(self, arrays: dict[str, np.ndarray]) -> None:
        self.set_moments(*(float(x) for x in arrays["reward_norm_moments"]))


@keras.saving.register_keras_serializable(package="keras_a3c")
class ObservationNormalization(keras.layers.Layer):
    """(x - mean) / sqrt(var + epsilon), clipped to [-clip, clip], with the running mean and variance
    of the observations the agent trained on.

    The statistics are non-trainable weights: `A3C.fit` updates them from every segment's (valid)
    observations inside the compiled update (`update_statistics`), once the update has passed its
    finite-loss check (so the segment itself is normalised with the statistics from before it); outside
    `fit` they stay as they are. Being weights of the network, they are saved with it and exported
    with it: the SavedModel and TFLite policy take raw observations. Before any update the layer is
    the identity (mean 0, variance 1).

    Args:
      clip: the bound of the normalised observation (> 0); None does not clip.
      epsilon: added to the variance.
      observation_key: which entry of a Dict (its key) or Tuple (its position) observation the layer
        normalises, and so which one `fit` updates its statistics from; None for a Box observation.
    """

    def __init__(self, clip: float | None = 10.0, epsilon: float = 1e-8, observation_key: str | int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be > 0 or None, got {clip!r}")
        self.clip = clip
        self.epsilon = epsilon
        self.observation_key = observation_key

    def build(self, input_shape):
        shape = tuple(input_shape[1:])
        self.mean = self.add_weight(name="mean", shape=shape, initializer="zeros", trainable=False)
        self.variance = self.add_weight(name="variance", shape=shape, initializer="ones", trainable=False)
        self.count = self.add_weight(name="count", shape=(), initializer="zeros", trainable=False)

    def call(self, observations):
        x = (tf.cast(observations, self.compute_dtype) - self.mean) * tf.math.rsqrt(self.variance + self.epsilon)
        return x if self.clip is None else tf.clip_by_value(x, -self.clip, self.clip)

    def update_statistics(self, observations: tf.Tensor, mask: tf.Tensor) -> None:
        """Merge the rows of `observations` [N, *shape] where `mask` [N] is true into the statistics."""
        self.merge_statistics(*self.moments(observations, mask))

    def moments(self, observations: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(mean [*shape], variance [*shape], count []) of the rows of `observations` [N, *shape] where
        `mask` [N] is true; zeros for no rows."""
        weights = tf.cast(mask, tf.float32)
        batch_count = tf.reduce_sum(weights)
        x = tf.cast(observations, tf.float32)
        w = tf.reshape(weights, [-1] + [1] * (len(x.shape) - 1))
        safe_count = tf.maximum(batch_count, 1.0)
        batch_mean = tf.reduce_sum(x * w, axis=0) / safe_count
        batch_var = tf.reduce_sum(tf.square(x - batch_mean) * w, axis=0) / safe_count
        return batch_mean, batch_var, batch_count

    def merge_statistics(self, batch_mean: tf.Tensor, batch_var: tf.Tensor, batch_count: tf.Tensor) -> None:
        """Merge a sample given by its moments (as `moments` returns them) into the statistics."""
        # A count of 0 (nothing seen) merges as "no data": the first batch sets the moments.
        count = tf.convert_to_tensor(self.count)
        mean, var, total = merge_moments(tf.convert_to_tensor(self.mean), tf.convert_to_tensor(self.variance),
                                         count, batch_mean, batch_var, batch_count)
        seen = total > 0
        self.mean.assign(tf.where(seen, mean, self.mean))
        self.variance.assign(tf.where(seen, var, self.variance))
        self.count.assign(total)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "clip": self.clip, "epsilon": self.epsilon,
                "observation_key": self.observation_key}


def observation_normalizers(network: keras.Model) -> list[ObservationNormalization]:
    """The `ObservationNormalization` layers of a network, nested models included."""
    found = []
    for layer in network.layers:
        if isinstance(layer, ObservationNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(observation_normalizers(layer))
    return found
