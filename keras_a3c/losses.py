"""The A3C objective as small pure functions (no state, no Keras objects).

Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning",
arXiv:1602.01783, Algorithm S3. Each worker minimises

    L = -log pi(a_t|s_t) * stop_gradient(R_t - V(s_t))      (policy gradient)
        + value_coef * (R_t - V(s_t))**2                      (value regression)
        - entropy_coef * H(pi(.|s_t))                         (entropy bonus)

where R_t is the n-step bootstrapped return. The policy enters only through
log pi(a_t|s_t) and H(pi(.|s_t)): `actor_critic_loss` takes them per sample, so the
same loss trains a categorical and a Gaussian policy (`keras_a3c.distributions`).
`reparameterised_policy_loss` is soft actor-critic's policy objective, for
reparameterised (pathwise) gradients; `action_bound_loss` keeps a Gaussian policy's
mean inside the bounds of its Box.

Shapes are checked at the top of every function (`keras_a3c.shapes`). All functions
work eagerly and under `tf.function`.
"""

from __future__ import annotations

import math

import tensorflow as tf

from keras_a3c.shapes import check_rank, check_same_shape

TensorLike = tf.Tensor


def _masked_mean(x: TensorLike, mask: TensorLike | None) -> TensorLike:
    """Mean of `x` [N] over the entries where `mask` [N] is 1 (0 if none are)."""
    if mask is None:
        return tf.reduce_mean(x)
    check_same_shape(x, mask, "values and mask")
    mask = tf.cast(mask, x.dtype)
    return tf.reduce_sum(x * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def n_step_returns(
    rewards: TensorLike,
    terminated: TensorLike,
    truncated: TensorLike,
    next_values: TensorLike,
    gamma: float,
) -> TensorLike:
    """n-step bootstrapped returns over a segment, with gymnasium semantics.

    R_t = r_t + gamma * (1 - terminated_t) * (R_{t+1}       if the episode goes on
                                              V(s_{t+1})    if truncated_t or t = T-1)

    A terminal step stops bootstrapping; a truncated step (time limit) and the
    last step of the segment bootstrap from the value of the next observation.
    Entries after an episode end belong to the next episode: the chain is cut.

    Args:
      rewards: [T, B] float, r_t.
      terminated: [T, B] bool or {0, 1}, the episode ended in a terminal state.
      truncated: [T, B] bool or {0, 1}, the episode was cut (e.g. time limit).
      next_values: [T, B] float, V(s_{t+1}) of the observation after step t
        (the final observation when the episode ended); treated as a constant.
      gamma: discount in [0, 1].

    Returns:
      [T, B] float, the n-step returns R_t.
    """
    check_rank(rewards, 2, "rewards")
    for name, x in (("terminated", terminated), ("truncated", truncated), ("next_values", next_values)):
        check_same_shape(rewards, x, f"rewards and {name}")
    horizon = rewards.shape[0]
    if horizon is None:
        raise ValueError("n_step_returns needs a static segment length T")
    dtype = rewards.dtype
    next_values = tf.stop_gradient(tf.cast(next_values, dtype))
    not_terminal = 1.0 - tf.cast(terminated, dtype)
    episode_ended = tf.cast(tf.cast(truncated, tf.bool) | tf.cast(terminated, tf.bool), dtype)
    returns = []
    future = next_values[horizon - 1]  # the segment's last step always bootstraps
    for t in reversed(range(horizon)):
        if t < horizon - 1:
            future = episode_ended[t] * next_values[t] + (1.0 - episode_ended[t]) * future
        future = rewards[t] + gamma * not_terminal[t] * future
        returns.append(future)
    return tf.stack(returns[::-1])


def lambda_returns(
    rewards: TensorLike,
    terminated: TensorLike,
    truncated: TensorLike,
    values: TensorLike,
    next_values: TensorLike,
    gamma: float,
    lam: float,
) -> TensorLike:
    """lambda-returns R_t = A_t + V(s_t), A_t the generalised advantage estimate GAE(gamma, lambda).

    Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation", arXiv:1506.02438, eq. (16), with gymnasium semantics:

      delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
      A_t     = delta_t + gamma * lambda * (1 - ended_t) * A_{t+1},   ended_t = terminated_t or truncated_t,

    and A_{T-1} = delta_{T-1} (the segment's last step bootstraps from V). A truncated step
    bootstraps from V of its final observation, a terminal one does not; the chain is cut at
    every episode end. lambda = 1 gives the n-step returns of `n_step_returns` (where, as in a
    segment, next_values[t] = values[t + 1] while the episode goes on); lambda = 0 the one-step
    TD targets r_t + gamma V(s_{t+1}).

    Args:
      rewards: [T, B] float, r_t.
      terminated: [T, B] bool or {0, 1}.
      truncated: [T, B] bool or {0, 1}.
      values: [T, B] float, V(s_t); treated as a constant.
      next_values: [T, B] float, V(s_{t+1}) (the final observation when the episode ended); a constant.
      gamma: discount in [0, 1].
      lam: lambda in [0, 1].

    Returns:
      [T, B] float, the lambda-returns (constants).
    """
    check_rank(rewards, 2, "rewards")
    for name, x in (("terminated", terminated), ("truncated", truncated), ("values", values),
                    ("next_values", next_values)):
        check_same_shape(rewards, x, f"rewards and {name}")
    horizon = rewards.shape[0]
    if horizon is None:
        raise ValueError("lambda_returns needs a static segment length T")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam!r}")
    dtype = rewards.dtype
    values = tf.stop_gradient(tf.cast(values, dtype))
    next_values = tf.stop_gradient(tf.cast(next_values, dtype))
    not_terminal = 1.0 - tf.cast(terminated, dtype)
    goes_on = 1.0 - tf.cast(tf.cast(truncated, tf.bool) | tf.cast(terminated, tf.bool), dtype)
    deltas = rewards + gamma * not_terminal * next_values - values
    gae = []
    advantage = deltas[horizon - 1]
    gae.append(advantage)
    for t in reversed(range(horizon - 1)):
        advantage = deltas[t] + gamma * lam * goes_on[t] * advantage
        gae.append(advantage)
    return tf.stack(gae[::-1]) + values


def normalized(x: TensorLike, mask: TensorLike | None = None, epsilon: float = 1e-8) -> TensorLike:
    """(x - mean) / (std + epsilon) over the entries of `x` [N] where `mask` [N] is 1 (advantage
    normalisation, as PPO and SB3 use it); masked entries are normalised with the same statistics."""
    check_rank(x, 1, "x")
    mean = _masked_mean(x, mask)
    std = tf.sqrt(_masked_mean(tf.square(x - mean), mask))
    return (x - mean) / (std + epsilon)


def advantages(returns: TensorLike, values: TensorLike) -> TensorLike:
    """A(s_t, a_t) = R_t - V(s_t), with the gradient stopped.

    Args:
      returns: [N] float, n-step returns.
      values: [N] float, V(s_t).

    Returns:
      [N] float, a constant for the policy-gradient loss.
    """
    check_rank(returns, 1, "returns")
    check_same_shape(returns, values, "returns and values")
    return tf.stop_gradient(returns - values)


def truncated_importance_weights(log_pi: TensorLike, behaviour_log_pi: TensorLike, clip: float) -> TensorLike:
    """rho_t = min(clip, pi(a_t|s_t) / mu(a_t|s_t)), with the gradient stopped.

    The truncated importance weight of IMPALA (Espeholt et al. 2018, "IMPALA: Scalable Distributed
    Deep-RL with Importance Weighted Actor-Learner Architectures", arXiv:1802.01561, section 4.2)
    on the policy-gradient term: an action the acting policy mu took more often than the learner's
    pi would counts for what pi makes of it, so a stale policy's samples cannot push pi's rare
    actions further down at mu's rate. Computed in log space: no overflow when pi >> mu.

    Args:
      log_pi: [N] float, log pi(a_t|s_t) under the policy being updated.
      behaviour_log_pi: [N] float, log mu(a_t|s_t) under the policy that acted.
      clip: rho-bar, > 0.

    Returns:
      [N] float, constants in (0, clip].
    """
    check_rank(log_pi, 1, "log_pi")
    check_same_shape(log_pi, behaviour_log_pi, "log_pi and behaviour_log_pi")
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip!r}")
    log_rho = tf.minimum(log_pi - behaviour_log_pi, tf.cast(math.log(clip), log_pi.dtype))
    return tf.stop_gradient(tf.exp(log_rho))


def score_function_loss(log_pi: TensorLike, advantages: TensorLike, mask: TensorLike | None = None) -> TensorLike:
    """mean(-log pi(a_t|s_t) * stop_gradient(A_t)) for any policy, from its log-probabilities.

    The likelihood-ratio (score-function) estimator of Williams (1992) with a baseline,
    as in A3C; its gradient is -E[A grad log pi(a|s)].

    Args:
      log_pi: [N] float, log pi(a_t|s_t) of the actions taken (summed over action dimensions).
      advantages: [N] float, A_t; its gradient is stopped here.
      mask: optional [N] {0, 1}, which entries are real transitions.

    Returns:
      scalar.
    """
    check_rank(log_pi, 1, "log_pi")
    check_same_shape(log_pi, advantages, "log_pi and advantages")
    return _masked_mean(-log_pi * tf.stop_gradient(advantages), mask)


def value_loss(values: TensorLike, returns: TensorLike, mask: TensorLike | None = None) -> TensorLike:
    """mean((R_t - V(s_t))**2), the critic's regression to the n-step return.

    Args:
      values: [N] float, V(s_t).
      returns: [N] float, R_t; treated as a constant target.
      mask: optional [N] {0, 1}.

    Returns:
      scalar.
    """
    check_rank(values, 1, "values")
    check_same_shape(values, returns, "values and returns")
    return _masked_mean(tf.square(tf.stop_gradient(returns) - values), mask)


def explained_variance(values: TensorLike, returns: TensorLike, mask: TensorLike | None = None) -> TensorLike:
    """1 - Var[R_t - V(s_t)] / Var[R_t]: how much of the return's variance the critic
    explains (1 perfect, 0 no better than a constant, < 0 worse). A diagnostic, not a loss.

    Args:
      values: [N] float, V(s_t).
      returns: [N] float, R_t.
      mask: optional [N] {0, 1}; the variances are over the entries where it is 1.

    Returns:
      scalar; 0 when the returns have no variance to explain.
    """
    check_rank(values, 1, "values")
    check_same_shape(values, returns, "values and returns")
    returns, values = tf.stop_gradient(returns), tf.stop_gradient(values)

    def variance(x: TensorLike) -> TensorLike:
        return _masked_mean(tf.square(x - _masked_mean(x, mask)), mask)

    var_returns = variance(returns)
    return tf.where(var_returns > 0, 1.0 - tf.math.divide_no_nan(variance(returns - values), var_returns), 0.0)


def action_bound_loss(
    means: TensorLike, low: TensorLike, high: TensorLike, mask: TensorLike | None = None
) -> TensorLike:
    """mean_t sum_d (excess_{t,d} / h_d)**2, a soft bound on a Gaussian policy's mean, where
    excess is how far mean_{t,d} lies outside [low_d, high_d] and h_d = (high_d - low_d) / 2.

    The env clips actions to the Box, so a mean beyond a bound acts like the bound itself and the
    policy gradient has nothing that pulls it back: it drifts, and the greedy policy (the mean)
    ends up pinned to the bound everywhere. The same remedy as the `bounds_loss` of rl_games
    (Makoviychuk & Makoviichuk 2021): zero inside the bounds, quadratic outside. A dimension with an
    infinite bound is not penalised.

    Args:
      means: [N, D] float, the Gaussian's means.
      low: [D] float, the Box's lower bounds.
      high: [D] float, the Box's upper bounds.
      mask: optional [N] {0, 1}.

    Returns:
      scalar.
    """
    check_rank(means, 2, "means")
    check_rank(low, 1, "low")
    check_same_shape(low, high, "low and high")
    check_same_shape(means[0], low, "a row of means and the bounds")
    excess = tf.nn.relu(means - high) + tf.nn.relu(low - means)
    # An infinite bound gives an infinite half-range, and excess / inf = 0.
    half_range = tf.maximum((high - low) / 2.0, 1e-6)
    return _masked_mean(tf.reduce_sum(tf.square(excess / half_range), axis=-1), mask)


def actor_critic_loss(
    log_pi: TensorLike,
    entropies: TensorLike,
    values: TensorLike,
    returns: TensorLike,
    mask: TensorLike | None = None,
    value_coef: float = 0.5,
    entropy_coef: float | TensorLike = 0.01,
    policy_advantages: TensorLike | None = None,
) -> dict[str, TensorLike]:
    """The A3C objective for any policy: policy loss + value_coef * value loss - entropy_coef * entropy.

    For a Gaussian policy the A3C paper (supplementary section 9) uses the differential
    entropy (1/2)(log(2 pi sigma^2) + 1) per dimension, which can be negative.

    Args:
      log_pi: [N], log pi(a_t|s_t) of the actions taken (summed over action dimensions).
      entropies: [N], H(pi(.|s_t)).
      values: [N], V(s_t).
      returns: [N], R_t.
      mask: optional [N] {0, 1}.
      value_coef: the value loss's weight.
      entropy_coef: beta, a number or a scalar tensor (a decaying beta).
      policy_advantages: optional [N], what weights the policy gradient instead of R_t - V(s_t)
        (e.g. `normalized(R_t - V(s_t))`); a constant.

    Returns:
      dict with scalars `loss`, `policy_loss`, `value_loss`, `entropy`.
    """
    check_rank(entropies, 1, "entropies")
    check_same_shape(log_pi, entropies, "log_pi and entropies")
    adv = advantages(returns, values) if policy_advantages is None else policy_advantages
    terms = {
        "policy_loss": score_function_loss(log_pi, adv, mask),
        "value_loss": value_loss(values, returns, mask),
        "entropy": _masked_mean(entropies, mask),
    }
    terms["loss"] = terms["policy_loss"] + value_coef * terms["value_loss"] - entropy_coef * terms["entropy"]
    return terms


def reparameterised_policy_loss(
    log_pi: TensorLike, q_values: TensorLike, alpha: float, mask: TensorLike | None = None
) -> TensorLike:
    """mean(alpha * log pi(f(eps; s_t)|s_t) - Q(s_t, f(eps; s_t))): soft actor-critic's policy loss.

    Haarnoja et al. 2018, "Soft Actor-Critic", arXiv:1801.01290, eq. (12) (with the
    temperature alpha of arXiv:1812.05905, eq. (7)). The action a_t = f_phi(eps_t; s_t)
    is reparameterised (e.g. `DiagGaussian.sample()`: mean + std * eps), so both inputs
    must be computed from that sample *without* stopping its gradient. The gradient then is

      grad_phi J = alpha grad_phi log pi(a|s) + (alpha grad_a log pi(a|s) - grad_a Q(s, a)) grad_phi f_phi(eps; s),

    where the first grad_phi is taken with a held fixed: the policy's parameters enter
    log pi both directly and through the action (seed 001 works this out for a Gaussian).

    Args:
      log_pi: [N] float, log pi(f(eps; s)|s) of the reparameterised actions.
      q_values: [N] float, Q(s, f(eps; s)); Q's own parameters are not trained by this loss.
      alpha: temperature >= 0, the weight of the entropy term.
      mask: optional [N] {0, 1}.

    Returns:
      scalar.
    """
    check_rank(log_pi, 1, "log_pi")
    check_same_shape(log_pi, q_values, "log_pi and q_values")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    return _masked_mean(alpha * log_pi - q_values, mask)
