"""Action distributions pi(.|s), built from the policy output of the network.

A network's first output holds the distribution's parameters ("params"):
  Discrete(A): logits [N, A], pi = softmax(logits)                -> `Categorical`
  Box((D,)):   [N, 2D] = concat(mean [N, D], log_std [N, D])      -> `DiagGaussian`

Each class offers, in TensorFlow, `log_prob` (summed over action dimensions),
the analytic `entropy`, `sample` and `mode` (the most likely action), plus numpy
twins `np_sample` / `np_mode` that workers use to act without a TensorFlow call.
Log-probabilities are computed in log space: `log_softmax` for the categorical,
log std for the Gaussian, so no log(p + eps) appears anywhere.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import tensorflow as tf

from keras_a3c.shapes import check_rank

# The Gaussian's log std is clamped here: std in [e^-5, e^2] ~ [0.0067, 7.4]. This keeps
# std away from 0 (a float32 std of exactly 0 makes log_prob -inf/NaN and sampling
# degenerate) and from infinity (samples stay finite), whatever the network outputs.
LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0
_LOG_2PI = math.log(2.0 * math.pi)


class Categorical:
    """pi(a|s) = softmax(logits)_a over the actions of a `Discrete(A)` space.

    Args:
      logits: [N, A] float, unnormalised log-probabilities.
    """

    def __init__(self, logits: tf.Tensor):
        logits = tf.convert_to_tensor(logits)
        check_rank(logits, 2, "logits")
        self.logits = logits

    @classmethod
    def from_params(cls, params: tf.Tensor) -> Categorical:
        """params: the logits [N, A]."""
        return cls(params)

    @staticmethod
    def num_params(action_space: gym.spaces.Discrete) -> int:
        return int(action_space.n)

    def log_prob(self, actions: tf.Tensor) -> tf.Tensor:
        """log pi(a|s): actions [N] int -> [N]."""
        check_rank(actions, 1, "actions")
        log_pi = tf.nn.log_softmax(self.logits)
        return tf.gather(log_pi, tf.cast(actions, tf.int32), axis=1, batch_dims=1)

    def entropy(self) -> tf.Tensor:
        """H = -sum_a pi(a|s) log pi(a|s): [N], >= 0."""
        log_pi = tf.nn.log_softmax(self.logits)
        return -tf.reduce_sum(tf.exp(log_pi) * log_pi, axis=-1)

    def sample(self, seed: tf.Tensor | None = None) -> tf.Tensor:
        """a ~ pi(.|s): [N] int32 (stateless when `seed`, a [2] int tensor, is given)."""
        if seed is None:
            return tf.random.categorical(self.logits, 1, dtype=tf.int32)[:, 0]
        return tf.random.stateless_categorical(self.logits, 1, seed, dtype=tf.int32)[:, 0]

    def mode(self) -> tf.Tensor:
        """argmax_a pi(a|s): [N] int64."""
        return tf.argmax(self.logits, axis=1)

    @staticmethod
    def np_sample(params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample per row by the Gumbel-max trick: logits [B, A] -> [B] int64."""
        gumbel = -np.log(-np.log(rng.random(params.shape)))
        return np.argmax(params + gumbel, axis=1)

    @staticmethod
    def np_mode(params: np.ndarray) -> np.ndarray:
        return np.argmax(params, axis=1)


class DiagGaussian:
    """pi(a|s) = N(a; mean, diag(std^2)) over a `Box((D,))` space, std = exp(log_std).

    log_std is clamped to [LOG_STD_MIN, LOG_STD_MAX] (the gradient is zero outside).

    Args:
      mean: [N, D] float.
      log_std: [N, D] float.
    """

    def __init__(self, mean: tf.Tensor, log_std: tf.Tensor):
        mean, log_std = tf.convert_to_tensor(mean), tf.convert_to_tensor(log_std)
        check_rank(mean, 2, "mean")
        if not tf.TensorShape(mean.shape).is_compatible_with(tf.TensorShape(log_std.shape)):
            raise ValueError(f"mean and log_std must have the same shape, got {mean.shape} and {log_std.shape}")
        self.mean = mean
        self.log_std = tf.clip_by_value(log_std, LOG_STD_MIN, LOG_STD_MAX)

    @classmethod
    def from_params(cls, params: tf.Tensor) -> DiagGaussian:
        """params: [N, 2D], the mean then the log std of each action dimension."""
        params = tf.convert_to_tensor(params)
        check_rank(params, 2, "Gaussian params")
        mean, log_std = tf.split(params, 2, axis=1)
        return cls(mean, log_std)

    @staticmethod
    def num_params(action_space: gym.spaces.Box) -> int:
        return 2 * int(action_space.shape[0])

    def log_prob(self, actions: tf.Tensor) -> tf.Tensor:
        """log pi(a|s) = -sum_d [ (a_d - mean_d)^2 / (2 std_d^2) + log std_d + log(2 pi) / 2 ]:
        actions [N, D] -> [N]."""
        check_rank(actions, 2, "actions")
        z = (tf.cast(actions, self.mean.dtype) - self.mean) * tf.exp(-self.log_std)
        return -tf.reduce_sum(0.5 * tf.square(z) + self.log_std + 0.5 * _LOG_2PI, axis=-1)

    def entropy(self) -> tf.Tensor:
        """Differential entropy sum_d [ log std_d + (1 + log(2 pi)) / 2 ]: [N] (can be < 0)."""
        return tf.reduce_sum(self.log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1)

    def sample(self, seed: tf.Tensor | None = None) -> tf.Tensor:
        """a = f(eps; s) = mean + std * eps, eps ~ N(0, I): [N, D].

        Reparameterised: gradients flow from `a` into the mean and the log std
        (what the soft actor-critic policy loss needs; see `losses.reparameterised_policy_loss`).
        """
        shape = tf.shape(self.mean)
        if seed is None:
            eps = tf.random.normal(shape, dtype=self.mean.dtype)
        else:
            eps = tf.random.stateless_normal(shape, seed, dtype=self.mean.dtype)
        return self.mean + tf.exp(self.log_std) * eps

    def mode(self) -> tf.Tensor:
        """The mean: [N, D]."""
        return self.mean

    @staticmethod
    def np_sample(params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[B, 2D] -> [B, D] float32, mean + std * eps, the same clamp as in TensorFlow."""
        mean, log_std = np.split(params, 2, axis=1)
        std = np.exp(np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX))
        return (mean + std * rng.standard_normal(mean.shape)).astype(np.float32)

    @staticmethod
    def np_mode(params: np.ndarray) -> np.ndarray:
        return np.split(params, 2, axis=1)[0].astype(np.float32)


Distribution = type[Categorical] | type[DiagGaussian]


def for_action_space(action_space: gym.Space) -> Distribution:
    """The distribution class for an action space: `Discrete` -> `Categorical`,
    a 1-D float `Box` -> `DiagGaussian`; any other space is a `ValueError` naming it."""
    if isinstance(action_space, gym.spaces.Discrete):
        if int(action_space.start) != 0:
            raise ValueError(f"unsupported action space {action_space}: Discrete spaces must start at 0")
        return Categorical
    if isinstance(action_space, gym.spaces.Box):
        if len(action_space.shape) != 1 or action_space.shape[0] < 1:
            raise ValueError(
                f"unsupported action space {action_space}: Box action spaces must be 1-D, shape (D,) "
                "(reshape the actions with a gymnasium.ActionWrapper)"
            )
        if not np.issubdtype(action_space.dtype, np.floating):
            raise ValueError(f"unsupported action space {action_space}: Box action spaces must have a float dtype")
        return DiagGaussian
    raise ValueError(
        f"unsupported action space {action_space}: keras_a3c supports Discrete (categorical policy) "
        "and 1-D Box (Gaussian policy) action spaces"
    )
