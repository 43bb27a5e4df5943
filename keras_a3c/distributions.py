"""Action distributions pi(.|s), built from the policy output of the network.

A network's first output holds the distribution's parameters ("params"):
  Discrete(A):          logits [N, A], pi = softmax(logits)                   -> `Categorical`
  Box((D,)):            [N, 2D] = concat(mean [N, D], log_std [N, D])         -> `DiagGaussian`
  MultiDiscrete(nvec):  logits [N, sum(nvec)], one softmax per part (factorised) -> `MultiCategorical`
  MultiBinary(n):       logits [N, n], one Bernoulli per bit (factorised)      -> `Bernoulli`

Each distribution offers, in TensorFlow, `log_prob` (summed over action dimensions),
the analytic `entropy`, `sample` and `mode` (the most likely action), plus numpy
twins `np_sample` / `np_mode` that workers use to act without a TensorFlow call.
Log-probabilities are computed in log space: `log_softmax` for the categorical,
log std for the Gaussian, log-sigmoids (softplus) for the Bernoulli, so no log(p + eps)
appears anywhere. `for_action_space` gives the family of an action space: a class for
Discrete, Box and MultiBinary, a `MultiCategoricalFamily` (which knows the parts' sizes)
for MultiDiscrete; all four answer `from_params`, `num_params`, `np_sample` and `np_mode`.
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


class _FromLogits:
    """A distribution whose params are its logits [N, P]."""

    def __init__(self, logits: tf.Tensor):
        logits = tf.convert_to_tensor(logits)
        check_rank(logits, 2, "logits")
        self.logits = logits

    @classmethod
    def from_params(cls, params: tf.Tensor):
        """params: the logits [N, P]."""
        return cls(params)


class Categorical(_FromLogits):
    """pi(a|s) = softmax(logits)_a over the actions of a `Discrete(A)` space.

    Args:
      logits: [N, A] float, unnormalised log-probabilities.
    """

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


class MultiCategorical:
    """pi(a|s) = prod_k softmax(logits_k)_{a_k} over a `MultiDiscrete(nvec)` space: independent
    categoricals, one per part, so log pi and the entropy are sums over the parts.

    Args:
      logits: [N, sum(nvec)] float, the parts' logits side by side.
      nvec: the number of actions of each part, (K,).
    """

    def __init__(self, logits: tf.Tensor, nvec: tuple[int, ...]):
        logits = tf.convert_to_tensor(logits)
        check_rank(logits, 2, "logits")
        if logits.shape[1] is not None and logits.shape[1] != sum(nvec):
            raise ValueError(f"MultiDiscrete{list(nvec)} needs {sum(nvec)} logits per row, got {logits.shape[1]}")
        self.logits, self.nvec = logits, tuple(nvec)
        self.parts = [Categorical(part) for part in tf.split(logits, list(self.nvec), axis=1)]

    def log_prob(self, actions: tf.Tensor) -> tf.Tensor:
        """sum_k log pi_k(a_k|s): actions [N, K] int -> [N]."""
        check_rank(actions, 2, "actions")
        return tf.add_n([part.log_prob(actions[:, k]) for k, part in enumerate(self.parts)])

    def entropy(self) -> tf.Tensor:
        """sum_k H(pi_k(.|s)): [N], >= 0."""
        return tf.add_n([part.entropy() for part in self.parts])

    def sample(self, seed: tf.Tensor | None = None) -> tf.Tensor:
        """a ~ pi(.|s): [N, K] int32; part k draws with the stateless seed `seed + [0, k]` when given."""
        return tf.stack([part.sample(None if seed is None else seed + tf.constant([0, k], seed.dtype))
                         for k, part in enumerate(self.parts)], axis=1)

    def mode(self) -> tf.Tensor:
        """The most likely action of each part: [N, K] int64."""
        return tf.stack([part.mode() for part in self.parts], axis=1)


class MultiCategoricalFamily:
    """The `MultiCategorical` policies of one `MultiDiscrete(nvec)` space (the family needs `nvec`
    to split the logits, where the other families are classes)."""

    def __init__(self, nvec: tuple[int, ...]):
        self.nvec = tuple(int(n) for n in nvec)
        self._splits = np.cumsum(self.nvec)[:-1]

    def from_params(self, params: tf.Tensor) -> MultiCategorical:
        """params: the logits [N, sum(nvec)]."""
        return MultiCategorical(params, self.nvec)

    def num_params(self, action_space: gym.spaces.MultiDiscrete) -> int:
        return sum(self.nvec)

    def np_sample(self, params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gumbel-max per part: logits [B, sum(nvec)] -> [B, K] int64."""
        gumbel = -np.log(-np.log(rng.random(params.shape)))
        return self.np_mode(params + gumbel)

    def np_mode(self, params: np.ndarray) -> np.ndarray:
        return np.stack([np.argmax(part, axis=1) for part in np.split(params, self._splits, axis=1)], axis=1)


class Bernoulli(_FromLogits):
    """pi(a|s) = prod_d p_d^{a_d} (1 - p_d)^{1 - a_d}, p = sigmoid(logits), over a `MultiBinary(n)` space.

    log p = -softplus(-logit) and log(1 - p) = -softplus(logit), so log pi and the entropy are
    exact for any logit.

    Args:
      logits: [N, n] float.
    """

    @staticmethod
    def num_params(action_space: gym.spaces.MultiBinary) -> int:
        return int(action_space.shape[0])

    def log_prob(self, actions: tf.Tensor) -> tf.Tensor:
        """sum_d [a_d logit_d - softplus(logit_d)]: actions [N, n] in {0, 1} -> [N]."""
        check_rank(actions, 2, "actions")
        actions = tf.cast(actions, self.logits.dtype)
        return tf.reduce_sum(actions * self.logits - tf.nn.softplus(self.logits), axis=-1)

    def entropy(self) -> tf.Tensor:
        """sum_d [p_d softplus(-logit_d) + (1 - p_d) softplus(logit_d)]: [N], >= 0."""
        p = tf.sigmoid(self.logits)
        return tf.reduce_sum(p * tf.nn.softplus(-self.logits) + (1.0 - p) * tf.nn.softplus(self.logits), axis=-1)

    def sample(self, seed: tf.Tensor | None = None) -> tf.Tensor:
        """a ~ pi(.|s): [N, n] int32 (stateless when `seed`, a [2] int tensor, is given)."""
        shape = tf.shape(self.logits)
        if seed is None:
            u = tf.random.uniform(shape, dtype=self.logits.dtype)
        else:
            u = tf.random.stateless_uniform(shape, seed, dtype=self.logits.dtype)
        return tf.cast(u < tf.sigmoid(self.logits), tf.int32)

    def mode(self) -> tf.Tensor:
        """1 where p > 1/2: [N, n] int64."""
        return tf.cast(self.logits > 0, tf.int64)

    @staticmethod
    def np_sample(params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[B, n] logits -> [B, n] int64 bits; sigmoid as 0.5 (1 + tanh(x / 2)), which cannot overflow."""
        return (rng.random(params.shape) < 0.5 * (1.0 + np.tanh(0.5 * params))).astype(np.int64)

    @staticmethod
    def np_mode(params: np.ndarray) -> np.ndarray:
        return (params > 0).astype(np.int64)


Distribution = type[Categorical] | type[DiagGaussian] | type[Bernoulli] | MultiCategoricalFamily


def masked_params(params: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Logits [N, P] with the entries where `mask` [N, P] is 0 set to the lowest float: those actions get
    probability exactly 0 (so they are never sampled and their log-probability is never used), and log pi
    and the entropy stay finite (0 * a finite number, where -inf would give NaN); their gradient is 0."""
    return tf.where(tf.cast(mask, tf.bool), params, tf.fill(tf.shape(params), params.dtype.min))


def np_masked_params(params: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The numpy twin of `masked_params` for acting: a row with no valid action (of a Discrete space, or of
    any part of a MultiDiscrete one) has nothing to sample, so `mask` must leave at least one per row."""
    return np.where(mask > 0.5, params, np.finfo(params.dtype).min)


def mask_parts(action_space: gym.Space) -> tuple[int, ...]:
    """The number of actions of each part of a Discrete or MultiDiscrete space, in mask order; any other
    space cannot be masked (a `ValueError` naming it)."""
    if isinstance(action_space, gym.spaces.Discrete):
        return (int(action_space.n),)
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        return tuple(int(n) for n in action_space.nvec)
    raise ValueError(f"an action mask needs a Discrete or MultiDiscrete action space, not {action_space}")


def check_action_mask(mask: np.ndarray, parts: tuple[int, ...], where: str) -> None:
    """Raise a `ValueError` naming the first row of `mask` [B, sum(parts)] that leaves some part no valid action."""
    start = 0
    for part, n in enumerate(parts):
        empty = ~(mask[:, start:start + n] > 0.5).any(axis=1)
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            what = "" if len(parts) == 1 else f" in part {part}"
            raise ValueError(f"{where}: the action mask of env {row} leaves no valid action{what}: {mask[row]}")
        start += n


def for_action_space(action_space: gym.Space) -> Distribution:
    """The distribution family of an action space: `Discrete` -> `Categorical`, a 1-D float
    `Box` -> `DiagGaussian`, a 1-D `MultiDiscrete` -> `MultiCategoricalFamily`, a 1-D
    `MultiBinary` -> `Bernoulli`; any other space is a `ValueError` naming it."""
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
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        if action_space.nvec.ndim != 1 or action_space.nvec.size < 1:
            raise ValueError(f"unsupported action space {action_space}: MultiDiscrete action spaces must be 1-D, "
                             "nvec of shape (K,) (flatten it with a gymnasium.ActionWrapper)")
        if np.any(action_space.start != 0):
            raise ValueError(f"unsupported action space {action_space}: MultiDiscrete spaces must start at 0")
        return MultiCategoricalFamily(tuple(action_space.nvec))
    if isinstance(action_space, gym.spaces.MultiBinary):
        if len(action_space.shape) != 1 or action_space.shape[0] < 1:
            raise ValueError(f"unsupported action space {action_space}: MultiBinary action spaces must be 1-D, "
                             "MultiBinary(n)")
        return Bernoulli
    raise ValueError(
        f"unsupported action space {action_space}: keras_a3c supports Discrete (categorical policy), "
        "1-D Box (Gaussian policy), MultiDiscrete (one categorical per part) and MultiBinary (one "
        "Bernoulli per bit) action spaces"
    )
