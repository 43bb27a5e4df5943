"""keras_a3c.losses against hand-computed numbers, eagerly and under tf.function."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_a3c import losses


@pytest.fixture(params=["eager", "tf_function"])
def run(request):
    """Call a loss function eagerly, or through a fresh tf.function."""

    def call(fn, *args, **kwargs):
        if request.param == "eager":
            return fn(*args, **kwargs)
        return tf.function(lambda *a: fn(*a, **kwargs))(*args)

    return call


LOGITS = tf.constant([[0.0, 0.0], [math.log(3.0), 0.0]])  # pi = (0.5, 0.5) and (0.75, 0.25)
ACTIONS = tf.constant([0, 1])


def test_log_prob(run):
    np.testing.assert_allclose(run(losses.log_prob, LOGITS, ACTIONS), [math.log(0.5), math.log(0.25)], rtol=1e-6)


def test_policy_gradient_loss(run):
    # -log(0.5) * 2 and -log(0.25) * 0.5, averaged.
    loss = run(losses.policy_gradient_loss, LOGITS, ACTIONS, tf.constant([2.0, 0.5]))
    np.testing.assert_allclose(loss, (2 * math.log(2) + 0.5 * math.log(4)) / 2, rtol=1e-6)
    masked = run(losses.policy_gradient_loss, LOGITS, ACTIONS, tf.constant([2.0, 0.5]), tf.constant([1.0, 0.0]))
    np.testing.assert_allclose(masked, 2 * math.log(2), rtol=1e-6)


def test_policy_gradient_loss_gradient_is_advantage_weighted_score():
    logits = tf.Variable(LOGITS)
    adv = tf.constant([2.0, 0.5])
    with tf.GradientTape() as tape:
        loss = losses.policy_gradient_loss(logits, ACTIONS, adv)
    # d/dlogits of -A log pi(a) = -A (onehot(a) - pi), averaged over the batch of 2.
    pi = np.array([[0.5, 0.5], [0.75, 0.25]])
    expected = -np.array([[2.0], [0.5]]) * (np.eye(2)[[0, 1]] - pi) / 2
    np.testing.assert_allclose(tape.gradient(loss, logits), expected, rtol=1e-5)


def test_advantage_gradient_is_stopped():
    values = tf.Variable([1.0, 2.0])
    with tf.GradientTape() as tape:
        adv = losses.advantages(tf.constant([3.0, 1.0]), values)
        loss = losses.policy_gradient_loss(LOGITS, ACTIONS, adv)
    np.testing.assert_allclose(adv, [2.0, -1.0])
    assert tape.gradient(loss, values) is None


def test_value_loss(run):
    np.testing.assert_allclose(run(losses.value_loss, tf.constant([1.0, 2.0]), tf.constant([3.0, 1.0])), 2.5)


def test_entropy_is_positive_and_exact(run):
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    np.testing.assert_allclose(run(losses.entropy, LOGITS), (math.log(2) + h1) / 2, rtol=1e-6)


def test_entropy_bonus_lowers_the_loss():
    base = losses.a3c_loss(LOGITS, tf.constant([1.0, 2.0]), ACTIONS, tf.constant([3.0, 1.0]), entropy_coef=0.0)
    bonus = losses.a3c_loss(LOGITS, tf.constant([1.0, 2.0]), ACTIONS, tf.constant([3.0, 1.0]), entropy_coef=0.1)
    np.testing.assert_allclose(base["loss"] - bonus["loss"], 0.1 * bonus["entropy"], rtol=1e-6)
    # policy loss with A = (2, -1) plus 0.5 * value loss 2.5.
    pg = (2 * math.log(2) - math.log(4)) / 2
    np.testing.assert_allclose(base["loss"], pg + 0.5 * 2.5, rtol=1e-6)


def test_n_step_returns_terminated_and_truncated(run):
    gamma = 0.9
    rewards = tf.constant([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    # Column 0: no episode end; bootstraps from V = 5 after the last step.
    # Column 1: terminal at t=0 (no bootstrap), truncated at t=1 (bootstraps from V(final obs) = 4).
    terminated = tf.constant([[False, True], [False, False], [False, False]])
    truncated = tf.constant([[False, False], [False, True], [False, False]])
    next_values = tf.constant([[100.0, 100.0], [100.0, 4.0], [5.0, 5.0]])  # 100s must be ignored
    returns = run(losses.n_step_returns, rewards, terminated, truncated, next_values, gamma=gamma)
    expected = [[1 + 0.9 * (1 + 0.9 * 5.5), 1.0], [1 + 0.9 * 5.5, 2 + 0.9 * 4], [5.5, 3 + 0.9 * 5]]
    np.testing.assert_allclose(returns, expected, rtol=1e-6)


def test_n_step_returns_do_not_backpropagate_into_bootstrap():
    next_values = tf.Variable([[1.0], [2.0]])
    with tf.GradientTape() as tape:
        returns = losses.n_step_returns(
            tf.ones([2, 1]), tf.zeros([2, 1], tf.bool), tf.zeros([2, 1], tf.bool), next_values, 0.5
        )
    np.testing.assert_allclose(returns, [[1 + 0.5 * 2.0], [2.0]])
    assert tape.gradient(returns, next_values) is None


@pytest.mark.parametrize(
    "fn, args",
    [
        (losses.policy_gradient_loss, (LOGITS, ACTIONS, tf.constant([[2.0], [0.5]]))),
        (losses.value_loss, (tf.constant([[1.0], [2.0]]), tf.constant([3.0, 1.0]))),
        (losses.value_loss, (tf.constant([1.0, 2.0]), tf.constant([[3.0], [1.0]]))),
        (losses.advantages, (tf.constant([3.0, 1.0]), tf.constant([[1.0], [2.0]]))),
        (losses.n_step_returns, (tf.ones([3, 2]), tf.zeros([3, 2]), tf.zeros([3, 2]), tf.ones([3, 1]), 0.9)),
    ],
)
def test_shape_checks_reject_broadcasting(run, fn, args):
    """[N, 1] against [N] would silently broadcast to [N, N]."""
    with pytest.raises(ValueError, match="shape|rank"):
        run(fn, *args)


def test_seed_002_linear_softmax_preferences():
    """pi = (0.7, 0.3), phi(s,a0) = (1,1,0), phi(s,a1) = (1,1,1): grad log pi(a0|s) = (0, 0, -0.3)."""
    phi = tf.constant([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    theta = tf.Variable([0.0, 0.0, math.log(0.3 / 0.7)])
    with tf.GradientTape() as tape:
        logits = tf.linalg.matvec(phi, theta)[None]  # action preferences h(s, a) = theta . phi(s, a)
        log_pi_a0 = losses.log_prob(logits, tf.constant([0]))[0]
    np.testing.assert_allclose(tf.nn.softmax(logits)[0], [0.7, 0.3], rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(log_pi_a0, theta), [0.0, 0.0, -0.3], atol=1e-6)


def test_seed_003_log_softmax_jacobian():
    """pi = (0.5, 0.1, ..., 0.1): d log pi_i / d x_j = delta_ij - pi_j, printed in the seed one row per x_j."""
    pi = np.array([0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    x = tf.Variable(np.log(pi)[None].astype(np.float32))
    with tf.GradientTape() as tape:
        log_pi = tf.concat([losses.log_prob(x, tf.constant([i])) for i in range(6)], axis=0)  # [6]
    jacobian = tape.jacobian(log_pi, x)[:, 0, :]  # [i, j] = d log pi_i / d x_j
    seed_matrix = np.array(
        [
            [0.5, -0.5, -0.5, -0.5, -0.5, -0.5],
            [-0.1, 0.9, -0.1, -0.1, -0.1, -0.1],
            [-0.1, -0.1, 0.9, -0.1, -0.1, -0.1],
            [-0.1, -0.1, -0.1, 0.9, -0.1, -0.1],
            [-0.1, -0.1, -0.1, -0.1, 0.9, -0.1],
            [-0.1, -0.1, -0.1, -0.1, -0.1, 0.9],
        ]
    )  # row j: d log pi_i / d x_j over i
    np.testing.assert_allclose(np.transpose(jacobian), seed_matrix, atol=1e-6)
    np.testing.assert_allclose(jacobian, np.eye(6) - pi[None, :], atol=1e-6)


def test_policy_gradient_theorem_on_a_two_step_mdp():
    """The mean of sampled advantage-weighted score gradients approaches grad J.

    From s0, action a leads to s_{1+a} with reward R0[a]; there a second action
    earns R1[s, a] and the episode terminates. J(theta) is computed exactly by
    enumeration; the estimate uses n_step_returns, advantages with a state baseline,
    and policy_gradient_loss, with the gamma^t weighting of the theorem.
    """
    gamma = 0.9
    r0 = np.array([0.0, 0.5], np.float32)
    r1 = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], np.float32)  # rows: s0 (unused), s1, s2
    theta = tf.Variable([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]])

    with tf.GradientTape() as tape:
        pi = tf.nn.softmax(theta)
        second = tf.reduce_sum(pi[1:] * r1[1:], axis=1)  # expected reward at s1, s2
        j = tf.reduce_sum(pi[0] * (r0 + gamma * second))
    exact = tape.gradient(j, theta).numpy()
    assert np.abs(exact).max() > 0.05

    n = 40_000
    rng = np.random.default_rng(0)
    probs = tf.nn.softmax(theta).numpy()
    a0 = (rng.random(n) < probs[0, 1]).astype(np.int32)
    s1 = 1 + a0
    a1 = (rng.random(n) < probs[s1, 1]).astype(np.int32)
    rewards = tf.constant(np.stack([r0[a0], r1[s1, a1]]))  # [T=2, B=n]
    terminated = tf.constant(np.stack([np.zeros(n, bool), np.ones(n, bool)]))
    returns = losses.n_step_returns(rewards, terminated, tf.zeros([2, n], tf.bool), tf.zeros([2, n]), gamma)
    baseline = tf.constant(np.stack([np.full(n, 0.4), np.full(n, 0.5)]), tf.float32)  # any b(s)
    with tf.GradientTape() as tape:
        loss = 0.0
        for t, (states, actions) in enumerate([(np.zeros(n, np.int32), a0), (s1, a1)]):
            adv = losses.advantages(returns[t], baseline[t])
            loss += gamma**t * losses.policy_gradient_loss(tf.gather(theta, states), actions, adv)
    estimate = -tf.convert_to_tensor(tape.gradient(loss, theta)).numpy()
    np.testing.assert_allclose(estimate, exact, atol=0.02)
