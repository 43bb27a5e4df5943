"""keras_a3c.losses against hand-computed numbers, eagerly and under tf.function."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_a3c import losses
from keras_a3c.distributions import Categorical, DiagGaussian


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


def log_prob(logits, actions):
    return Categorical(logits).log_prob(actions)


def categorical_score_loss(logits, actions, advantages, mask=None):
    """The score-function loss of a categorical policy from its logits."""
    return losses.score_function_loss(log_prob(logits, actions), advantages, mask)


def test_categorical_log_prob(run):
    np.testing.assert_allclose(run(log_prob, LOGITS, ACTIONS), [math.log(0.5), math.log(0.25)], rtol=1e-6)


def test_score_function_loss_weights_minus_log_pi_by_the_advantage(run):
    # -log(0.5) * 2 and -log(0.25) * 0.5, averaged.
    loss = run(categorical_score_loss, LOGITS, ACTIONS, tf.constant([2.0, 0.5]))
    np.testing.assert_allclose(loss, (2 * math.log(2) + 0.5 * math.log(4)) / 2, rtol=1e-6)
    masked = run(categorical_score_loss, LOGITS, ACTIONS, tf.constant([2.0, 0.5]), tf.constant([1.0, 0.0]))
    np.testing.assert_allclose(masked, 2 * math.log(2), rtol=1e-6)


def test_score_function_loss_gradient_is_advantage_weighted_score():
    logits = tf.Variable(LOGITS)
    adv = tf.constant([2.0, 0.5])
    with tf.GradientTape() as tape:
        loss = categorical_score_loss(logits, ACTIONS, adv)
    # d/dlogits of -A log pi(a) = -A (onehot(a) - pi), averaged over the batch of 2.
    pi = np.array([[0.5, 0.5], [0.75, 0.25]])
    expected = -np.array([[2.0], [0.5]]) * (np.eye(2)[[0, 1]] - pi) / 2
    np.testing.assert_allclose(tape.gradient(loss, logits), expected, rtol=1e-5)


def test_advantage_gradient_is_stopped():
    values = tf.Variable([1.0, 2.0])
    with tf.GradientTape() as tape:
        adv = losses.advantages(tf.constant([3.0, 1.0]), values)
        loss = categorical_score_loss(LOGITS, ACTIONS, adv)
    np.testing.assert_allclose(adv, [2.0, -1.0])
    assert tape.gradient(loss, values) is None


def test_value_loss(run):
    np.testing.assert_allclose(run(losses.value_loss, tf.constant([1.0, 2.0]), tf.constant([3.0, 1.0])), 2.5)


def test_explained_variance(run):
    # R = (1, 2, 3, 4): Var 1.25. V = (1, 2, 3, 3): R - V = (0, 0, 0, 1), Var 0.1875.
    returns, values = tf.constant([1.0, 2.0, 3.0, 4.0]), tf.constant([1.0, 2.0, 3.0, 3.0])
    np.testing.assert_allclose(run(losses.explained_variance, values, returns), 1 - 0.1875 / 1.25, rtol=1e-6)
    np.testing.assert_allclose(run(losses.explained_variance, returns, returns), 1.0)
    # A constant critic explains nothing; one that adds noise is worse than nothing.
    np.testing.assert_allclose(run(losses.explained_variance, tf.fill([4], 7.0), returns), 0.0, atol=1e-6)
    np.testing.assert_allclose(run(losses.explained_variance, tf.constant([4.0, 3.0, 2.0, 1.0]), returns), -3.0)
    # Masked: only the first three count, where V = R exactly.
    mask = tf.constant([1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(run(losses.explained_variance, values, returns, mask), 1.0)
    # Returns without variance: nothing to explain, 0 rather than NaN.
    np.testing.assert_allclose(run(losses.explained_variance, values, tf.fill([4], 2.0)), 0.0)
    with pytest.raises(ValueError, match="values and returns"):
        losses.explained_variance(values, returns[:3])


def categorical_actor_critic_loss(logits, values, actions, returns, **coefs):
    pi = Categorical(logits)
    return losses.actor_critic_loss(pi.log_prob(actions), pi.entropy(), values, returns, **coefs)


def test_categorical_entropy_is_positive_and_exact(run):
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    np.testing.assert_allclose(run(lambda x: Categorical(x).entropy(), LOGITS), [math.log(2), h1], rtol=1e-6)


def test_entropy_bonus_lowers_the_loss():
    base = categorical_actor_critic_loss(LOGITS, tf.constant([1.0, 2.0]), ACTIONS, tf.constant([3.0, 1.0]),
                                         entropy_coef=0.0)
    bonus = categorical_actor_critic_loss(LOGITS, tf.constant([1.0, 2.0]), ACTIONS, tf.constant([3.0, 1.0]),
                                          entropy_coef=0.1)
    np.testing.assert_allclose(base["loss"] - bonus["loss"], 0.1 * bonus["entropy"], rtol=1e-6)
    # policy loss with A = (2, -1) plus 0.5 * value loss 2.5.
    pg = (2 * math.log(2) - math.log(4)) / 2
    np.testing.assert_allclose(base["loss"], pg + 0.5 * 2.5, rtol=1e-6)


def test_actor_critic_loss_weights_each_term_by_its_coefficient(run):
    """Non-default value_coef and entropy_coef: loss = policy loss + c_v * value loss - c_e * entropy."""
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    terms = run(lambda *a: categorical_actor_critic_loss(*a, value_coef=2.0, entropy_coef=0.3),
                LOGITS, tf.constant([1.0, 2.0]), ACTIONS, tf.constant([3.0, 1.0]))
    pg = (2 * math.log(2) - math.log(4)) / 2  # advantages (2, -1)
    np.testing.assert_allclose(terms["policy_loss"], pg, rtol=1e-6)
    np.testing.assert_allclose(terms["value_loss"], 2.5, rtol=1e-6)
    np.testing.assert_allclose(terms["entropy"], (math.log(2) + h1) / 2, rtol=1e-6)
    np.testing.assert_allclose(terms["loss"], pg + 2.0 * 2.5 - 0.3 * (math.log(2) + h1) / 2, rtol=1e-6)


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
        (categorical_score_loss, (LOGITS, ACTIONS, tf.constant([[2.0], [0.5]]))),
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


def test_score_of_a_linear_softmax_policy_is_phi_minus_its_mean():
    """Seed 002: grad log pi(a|s) = phi(s,a) - sum_b pi(b|s) phi(s,b);
    pi = (0.7, 0.3), phi(s,a0) = (1,1,0), phi(s,a1) = (1,1,1): grad log pi(a0|s) = (0, 0, -0.3)."""
    phi = tf.constant([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    theta = tf.Variable([0.0, 0.0, math.log(0.3 / 0.7)])
    with tf.GradientTape() as tape:
        logits = tf.linalg.matvec(phi, theta)[None]  # action preferences h(s, a) = theta . phi(s, a)
        log_pi_a0 = log_prob(logits, tf.constant([0]))[0]
    np.testing.assert_allclose(tf.nn.softmax(logits)[0], [0.7, 0.3], rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(log_pi_a0, theta), [0.0, 0.0, -0.3], atol=1e-6)


def test_log_softmax_jacobian_is_identity_minus_pi():
    """Seed 003: pi = (0.5, 0.1, ..., 0.1): d log pi_i / d x_j = delta_ij - pi_j,
    printed in the seed one row per x_j."""
    pi = np.array([0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    x = tf.Variable(np.log(pi)[None].astype(np.float32))
    with tf.GradientTape() as tape:
        log_pi = tf.concat([log_prob(x, tf.constant([i])) for i in range(6)], axis=0)  # [6]
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
    and score_function_loss, with the gamma^t weighting of the theorem.
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
            loss += gamma**t * categorical_score_loss(tf.gather(theta, states), actions, adv)
    estimate = -tf.convert_to_tensor(tape.gradient(loss, theta)).numpy()
    np.testing.assert_allclose(estimate, exact, atol=0.02)


def test_score_function_loss_and_actor_critic_loss(run):
    log_pi = tf.constant([math.log(0.5), math.log(0.25)])
    np.testing.assert_allclose(
        run(losses.score_function_loss, log_pi, tf.constant([2.0, 0.5])), (2 * math.log(2) + 0.5 * math.log(4)) / 2,
        rtol=1e-6,
    )
    # actor_critic_loss from log pi and entropies equals it built from the categorical's logits.
    values, returns = tf.constant([1.0, 2.0]), tf.constant([3.0, 1.0])
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    terms = run(lambda *a: losses.actor_critic_loss(*a, entropy_coef=0.1), log_pi, tf.constant([math.log(2), h1]),
                values, returns)
    pg = (2 * math.log(2) - math.log(4)) / 2  # advantages (2, -1)
    np.testing.assert_allclose(terms["loss"], pg + 0.5 * 2.5 - 0.1 * (math.log(2) + h1) / 2, rtol=1e-6)
    categorical = categorical_actor_critic_loss(LOGITS, values, ACTIONS, returns, entropy_coef=0.1)
    for key in ("loss", "policy_loss", "value_loss", "entropy"):
        np.testing.assert_allclose(categorical[key], terms[key], rtol=1e-6)


def test_actor_critic_loss_with_a_gaussian_policy(run):
    """One dimension, mean 0, std 1, action 1: log pi = -1/2 - log(2 pi)/2, H = (1 + log(2 pi))/2."""

    def loss(mean, log_std, actions, values, returns, mask):
        pi = DiagGaussian(mean, log_std)
        return losses.actor_critic_loss(pi.log_prob(actions), pi.entropy(), values, returns, mask,
                                        value_coef=0.5, entropy_coef=0.01)

    terms = run(loss, tf.zeros([2, 1]), tf.zeros([2, 1]), tf.constant([[1.0], [5.0]]), tf.constant([0.0, 0.0]),
                tf.constant([2.0, 7.0]), tf.constant([1.0, 0.0]))  # the second row is masked out
    log_pi = -0.5 - 0.5 * math.log(2 * math.pi)
    entropy = 0.5 * (1 + math.log(2 * math.pi))
    np.testing.assert_allclose(terms["policy_loss"], -log_pi * 2.0, rtol=1e-6)
    np.testing.assert_allclose(terms["entropy"], entropy, rtol=1e-6)
    np.testing.assert_allclose(terms["loss"], -log_pi * 2.0 + 0.5 * 4.0 - 0.01 * entropy, rtol=1e-6)


def test_reparameterised_policy_loss(run):
    loss = run(lambda lp, q: losses.reparameterised_policy_loss(lp, q, alpha=0.2), tf.constant([-1.0, 0.5]),
               tf.constant([3.0, -1.0]))
    np.testing.assert_allclose(loss, ((0.2 * -1.0 - 3.0) + (0.2 * 0.5 + 1.0)) / 2, rtol=1e-6)
    masked = losses.reparameterised_policy_loss(tf.constant([-1.0, 0.5]), tf.constant([3.0, -1.0]), 0.2,
                                                mask=tf.constant([0.0, 1.0]))
    np.testing.assert_allclose(masked, 0.2 * 0.5 + 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        losses.reparameterised_policy_loss(tf.constant([1.0]), tf.constant([1.0]), alpha=-1.0)


@pytest.mark.parametrize(
    "fn, args",
    [
        (losses.score_function_loss, (tf.zeros([3]), tf.zeros([3, 1]))),
        (losses.actor_critic_loss, (tf.zeros([3]), tf.zeros([3, 1]), tf.zeros([3]), tf.zeros([3]))),
        (losses.actor_critic_loss, (tf.zeros([3, 1]), tf.zeros([3]), tf.zeros([3]), tf.zeros([3]))),
        (lambda lp, q: losses.reparameterised_policy_loss(lp, q, 0.1), (tf.zeros([3]), tf.zeros([3, 1]))),
    ],
)
def test_generic_losses_reject_broadcasting(run, fn, args):
    with pytest.raises(ValueError, match="shape|rank"):
        run(fn, *args)


class TestReparameterisedGaussianGradient:
    """Seed 001: for a Gaussian policy N(mu_phi(s), sigma_phi(s)) and a = f_phi(eps; s) = mu + sigma * eps,

        grad_phi log pi(f_phi(eps; s)|s) = grad_a log pi(a|s) grad_phi f_phi(eps; s) + grad_phi log pi(a|s) at a fixed,

    with the closed forms the seed writes out for one action dimension:
        total = -grad sigma / sigma - (f - mu)(grad f - grad mu) / sigma^2 + (f - mu)^2 grad sigma / sigma^3
        grad_a log pi = -(f - mu) / sigma^2
        grad_phi log pi at a fixed = -grad sigma / sigma + (f - mu) grad mu / sigma^2 + (f - mu)^2 grad sigma / sigma^3

    Here mu = w_mu . s + b_mu and sigma = exp(w_sigma . s + b_sigma): phi = (w_mu, b_mu, w_sigma, b_sigma),
    so grad_phi mu = (s, 1, 0, 0) and grad_phi sigma = sigma (0, 0, s, 1).
    """

    S = np.array([0.7, -1.2, 0.4])

    @staticmethod
    def policy(phi, s):
        k = s.shape[0]
        mu = tf.tensordot(phi[:k], s, 1) + phi[k]
        log_sigma = tf.tensordot(phi[k + 1 : 2 * k + 1], s, 1) + phi[2 * k + 1]
        return mu, log_sigma

    def log_pi(self, phi, s, a):
        mu, log_sigma = self.policy(phi, s)
        return DiagGaussian(tf.reshape(mu, [1, 1]), tf.reshape(log_sigma, [1, 1])).log_prob(tf.reshape(a, [1, 1]))[0]

    def f(self, phi, s, eps):
        """a = f_phi(eps; s) = mu + sigma * eps, as `DiagGaussian.sample` computes it."""
        mu, log_sigma = self.policy(phi, s)
        return mu + tf.exp(log_sigma) * eps

    def closed_form(self, phi, eps):
        s, k = self.S, self.S.shape[0]
        mu = phi[:k] @ s + phi[k]
        sigma = np.exp(phi[k + 1 : 2 * k + 1] @ s + phi[2 * k + 1])
        grad_mu = np.concatenate([s, [1.0], np.zeros(k + 1)])
        grad_sigma = sigma * np.concatenate([np.zeros(k + 1), s, [1.0]])
        f = mu + sigma * eps
        grad_f = grad_mu + eps * grad_sigma
        total = -grad_sigma / sigma - (f - mu) * (grad_f - grad_mu) / sigma**2 + (f - mu) ** 2 * grad_sigma / sigma**3
        grad_a = -(f - mu) / sigma**2
        direct = -grad_sigma / sigma + (f - mu) * grad_mu / sigma**2 + (f - mu) ** 2 * grad_sigma / sigma**3
        return total, grad_a, grad_f, direct, grad_sigma / sigma

    @pytest.mark.parametrize("seed", range(4))
    def test_total_gradient_is_pathwise_plus_direct_and_matches_the_seed(self, seed):
        rng = np.random.default_rng(seed)
        phi_value = rng.normal(0.0, 0.5, 8)
        eps = float(rng.normal())
        s = tf.constant(self.S)
        phi = tf.Variable(phi_value)

        # Left side: the total derivative, the action moving with phi.
        with tf.GradientTape() as tape:
            total = self.log_pi(phi, s, self.f(phi, s, eps))
        total = tape.gradient(total, phi).numpy()

        # Right side, each part on its own tape: grad_a log pi at a = f, grad_phi f, and grad_phi log pi at a fixed.
        a = tf.Variable(self.f(phi, s, eps))
        with tf.GradientTape() as tape:
            log_pi_at_a = self.log_pi(tf.constant(phi_value), s, a)
        grad_a = tape.gradient(log_pi_at_a, a).numpy()
        with tf.GradientTape() as tape:
            f = self.f(phi, s, eps)
        grad_f = tape.gradient(f, phi).numpy()
        with tf.GradientTape() as tape:
            direct = self.log_pi(phi, s, tf.constant(a.numpy()))
        direct = tape.gradient(direct, phi).numpy()

        np.testing.assert_allclose(total, grad_a * grad_f + direct, rtol=1e-9, atol=1e-12)
        want_total, want_grad_a, want_grad_f, want_direct, grad_log_sigma = self.closed_form(phi_value, eps)
        np.testing.assert_allclose(total, want_total, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(grad_a, want_grad_a, rtol=1e-9)
        np.testing.assert_allclose(grad_f, want_grad_f, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(direct, want_direct, rtol=1e-9, atol=1e-12)
        # With f - mu = sigma eps the mean terms cancel: the total is -grad log sigma, yet the direct
        # term alone is not (ignoring it, as in the seed's question, gives a different gradient).
        np.testing.assert_allclose(total, -grad_log_sigma, rtol=1e-9, atol=1e-12)
        assert not np.allclose(grad_a * grad_f, total)

    def test_reparameterised_policy_loss_gradient(self):
        """grad_phi of alpha log pi(f|s) - Q(s, f) with Q(s, a) = -(a - c)^2 is
        alpha * total - dQ/da grad_phi f, dQ/da = -2 (f - c)."""
        alpha, c = 0.3, 0.25
        rng = np.random.default_rng(9)
        phi_value, eps = rng.normal(0.0, 0.5, 8), 0.8
        s, phi = tf.constant(self.S), tf.Variable(phi_value)
        with tf.GradientTape() as tape:
            a = self.f(phi, s, eps)
            loss = losses.reparameterised_policy_loss(
                tf.reshape(self.log_pi(phi, s, a), [1]), tf.reshape(-tf.square(a - c), [1]), alpha
            )
        total, _, grad_f, _, _ = self.closed_form(phi_value, eps)
        k = self.S.shape[0]
        f = phi_value[:k] @ self.S + phi_value[k] + np.exp(phi_value[k + 1 : 2 * k + 1] @ self.S + phi_value[-1]) * eps
        np.testing.assert_allclose(tape.gradient(loss, phi), alpha * total + 2 * (f - c) * grad_f, rtol=1e-9)


def segment_with_episode_ends(seed=0, T=6, B=5):
    rng = np.random.default_rng(seed)
    rewards = tf.constant(rng.normal(size=(T, B)), tf.float32)
    terminated = tf.constant(rng.random((T, B)) < 0.2)
    truncated = tf.constant((rng.random((T, B)) < 0.2) & ~terminated.numpy())
    # As in a segment: V(s_{t+1}) after step t is V(s_t) of step t + 1 (the final observation of an
    # episode is row t + 1; the reset step after it is not a transition and is masked out).
    all_values = rng.normal(size=(T + 1, B)).astype(np.float32)
    return rewards, terminated, truncated, tf.constant(all_values[:T]), tf.constant(all_values[1:])


def test_lambda_returns_with_lambda_1_are_the_n_step_returns(run):
    rewards, terminated, truncated, values, next_values = segment_with_episode_ends()
    assert terminated.numpy().any() and truncated.numpy().any()
    lam1 = run(lambda *a: losses.lambda_returns(*a, gamma=0.9, lam=1.0), rewards, terminated, truncated, values,
               next_values)
    n_step = losses.n_step_returns(rewards, terminated, truncated, next_values, 0.9)
    np.testing.assert_allclose(lam1, n_step, rtol=1e-5, atol=1e-6)


def test_lambda_returns_with_lambda_0_are_the_one_step_targets(run):
    rewards, terminated, truncated, values, next_values = segment_with_episode_ends(1)
    lam0 = run(lambda *a: losses.lambda_returns(*a, gamma=0.9, lam=0.0), rewards, terminated, truncated, values,
               next_values)
    td = rewards.numpy() + 0.9 * (1 - terminated.numpy()) * next_values.numpy()
    np.testing.assert_allclose(lam0, td, rtol=1e-5, atol=1e-6)


def test_lambda_returns_by_hand(run):
    """T = 3, one env: rewards (1, 2, 3), V(s_t) = (0.5, 1, 2), V(s_{t+1}) = (1, 2, 4), gamma 0.9, lambda 0.5.
    deltas: 1 + 0.9 - 0.5 = 1.4, 2 + 1.8 - 1 = 2.8, 3 + 3.6 - 2 = 4.6;
    A_2 = 4.6, A_1 = 2.8 + 0.45 * 4.6 = 4.87, A_0 = 1.4 + 0.45 * 4.87 = 3.5915; R = A + V.
    With the episode truncated at t = 1 the chain is cut there: A_1 = 2.8, A_0 = 1.4 + 0.45 * 2.8 = 2.66;
    terminated at t = 1 instead: delta_1 = 2 - 1 = 1, A_1 = 1, A_0 = 1.4 + 0.45 = 1.85."""
    rewards = tf.constant([[1.0], [2.0], [3.0]])
    values, next_values = tf.constant([[0.5], [1.0], [2.0]]), tf.constant([[1.0], [2.0], [4.0]])
    no, at_1 = tf.zeros([3, 1], tf.bool), tf.constant([[False], [True], [False]])

    def returns(terminated, truncated):
        return run(lambda *a: losses.lambda_returns(*a, gamma=0.9, lam=0.5), rewards, terminated, truncated, values,
                   next_values)

    np.testing.assert_allclose(returns(no, no)[:, 0], [3.5915 + 0.5, 4.87 + 1.0, 4.6 + 2.0], rtol=1e-5)
    np.testing.assert_allclose(returns(no, at_1)[:, 0], [2.66 + 0.5, 2.8 + 1.0, 4.6 + 2.0], rtol=1e-5)
    np.testing.assert_allclose(returns(at_1, no)[:, 0], [1.85 + 0.5, 1.0 + 1.0, 4.6 + 2.0], rtol=1e-5)


def test_lambda_returns_are_constants_and_check_shapes():
    rewards, terminated, truncated, values, next_values = segment_with_episode_ends(2)
    values, next_values = tf.Variable(values), tf.Variable(next_values)
    with tf.GradientTape(persistent=True) as tape:
        returns = losses.lambda_returns(rewards, terminated, truncated, values, next_values, 0.9, 0.95)
    assert tape.gradient(returns, values) is None and tape.gradient(returns, next_values) is None
    with pytest.raises(ValueError, match="shape"):
        losses.lambda_returns(rewards, terminated, truncated, values[:, :1], next_values, 0.9, 0.95)
    with pytest.raises(ValueError, match="lam"):
        losses.lambda_returns(rewards, terminated, truncated, values, next_values, 0.9, 1.5)


def test_normalized_standardises_over_the_mask(run):
    x, mask = tf.constant([1.0, 3.0, 5.0, 100.0]), tf.constant([1.0, 1.0, 1.0, 0.0])
    out = run(losses.normalized, x, mask).numpy()
    np.testing.assert_allclose(out[:3], np.array([-2.0, 0.0, 2.0]) / np.std([1.0, 3.0, 5.0]), rtol=1e-5)


def test_policy_advantages_replace_r_minus_v_in_the_policy_term_only(run):
    log_pi, values, returns = tf.constant([math.log(0.5), math.log(0.25)]), tf.constant([1.0, 2.0]), \
        tf.constant([3.0, 1.0])
    entropies = tf.constant([0.1, 0.2])
    terms = run(lambda *a: losses.actor_critic_loss(*a, policy_advantages=tf.constant([1.0, -1.0])), log_pi,
                entropies, values, returns)
    np.testing.assert_allclose(terms["policy_loss"], (math.log(2) - math.log(4)) / 2, rtol=1e-6)
    np.testing.assert_allclose(terms["value_loss"], 2.5, rtol=1e-6)


def test_action_bound_loss_by_hand(run):
    """Box [-2, 2] x [0, 1] (half-ranges 2 and 0.5): zero inside, ((excess) / half-range)^2 outside."""
    means = tf.constant([[1.0, 0.5], [3.0, 0.5], [-4.0, 1.25], [9.0, 9.0]])
    low, high = tf.constant([-2.0, 0.0]), tf.constant([2.0, 1.0])
    mask = tf.constant([1.0, 1.0, 1.0, 0.0])  # the last row is masked out
    loss = run(losses.action_bound_loss, means, low, high, mask)
    per_row = [0.0, (1.0 / 2.0) ** 2, (2.0 / 2.0) ** 2 + (0.25 / 0.5) ** 2]
    np.testing.assert_allclose(loss, np.mean(per_row), rtol=1e-6)
    np.testing.assert_allclose(run(losses.action_bound_loss, means[:1], low, high), 0.0)


def test_action_bound_loss_pulls_the_mean_back_inside_and_ignores_infinite_bounds():
    means = tf.Variable([[3.0, 5.0]])
    low, high = tf.constant([-2.0, -np.inf]), tf.constant([2.0, np.inf])
    with tf.GradientTape() as tape:
        loss = losses.action_bound_loss(means, low, high)
    grad = tape.gradient(loss, means).numpy()
    np.testing.assert_allclose(loss, 0.25, rtol=1e-6)
    np.testing.assert_allclose(grad, [[2 * 1.0 / 4.0, 0.0]], rtol=1e-6)  # d/dm ((m - 2) / 2)^2 at 3; none unbounded


def test_action_bound_loss_checks_shapes():
    with pytest.raises(ValueError, match="bounds"):
        losses.action_bound_loss(tf.zeros([3, 2]), tf.zeros([3]), tf.ones([3]))
    with pytest.raises(ValueError, match="low and high"):
        losses.action_bound_loss(tf.zeros([3, 2]), tf.zeros([2]), tf.ones([3]))


def test_truncated_importance_weights_by_hand(run):
    log_pi = tf.math.log(tf.constant([0.5, 0.25, 0.9, 1e-30]))
    log_mu = tf.math.log(tf.constant([0.25, 0.5, 0.3, 1.0]))
    np.testing.assert_allclose(run(losses.truncated_importance_weights, log_pi, log_mu, clip=1.0),
                               [1.0, 0.5, 1.0, 1e-30], rtol=1e-5)
    np.testing.assert_allclose(run(losses.truncated_importance_weights, log_pi, log_mu, clip=2.5),
                               [2.0, 0.5, 2.5, 1e-30], rtol=1e-5)
    # pi >> mu does not overflow on the way to the clip.
    np.testing.assert_allclose(run(losses.truncated_importance_weights, tf.constant([0.0]), tf.constant([-200.0]),
                                   clip=1.0), [1.0])


def test_truncated_importance_weights_are_constants_and_check_their_inputs():
    log_pi = tf.Variable([math.log(0.5), math.log(0.25)])
    with tf.GradientTape() as tape:
        rho = losses.truncated_importance_weights(log_pi, tf.constant([math.log(0.25), math.log(0.5)]), 1.0)
    assert tape.gradient(rho, log_pi) is None
    with pytest.raises(ValueError, match="log_pi and behaviour_log_pi"):
        losses.truncated_importance_weights(tf.zeros([3]), tf.zeros([1]), 1.0)
    with pytest.raises(ValueError, match="clip must be > 0"):
        losses.truncated_importance_weights(tf.zeros([3]), tf.zeros([3]), 0.0)
