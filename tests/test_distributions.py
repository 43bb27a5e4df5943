"""keras_a3c.distributions against closed forms written out in numpy, eagerly and under tf.function."""

import math

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from keras_a3c import distributions
from keras_a3c.distributions import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    Bernoulli,
    Categorical,
    DiagGaussian,
    MultiCategorical,
    MultiCategoricalFamily,
)


@pytest.fixture(params=["eager", "tf_function"])
def run(request):
    """Call a function of tensors eagerly, or through a fresh tf.function."""

    def call(fn, *args):
        if request.param == "eager":
            return fn(*args)
        return tf.function(fn)(*args)

    return call


def gaussian_case(seed, n=64, dim=3):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 2.0, (n, dim))
    log_std = rng.uniform(LOG_STD_MIN, LOG_STD_MAX, (n, dim))
    actions = mean + np.exp(log_std) * rng.normal(0.0, 3.0, (n, dim))  # also far in the tails
    return mean, log_std, actions


def normal_log_density(x, mean, std):
    """log of exp(-(x - mean)^2 / (2 std^2)) / sqrt(2 pi std^2), one dimension."""
    return -((x - mean) ** 2) / (2.0 * std**2) - 0.5 * np.log(2.0 * np.pi * std**2)


@pytest.mark.parametrize("seed", range(5))
def test_gaussian_log_prob_is_the_sum_of_normal_log_densities(run, seed):
    mean, log_std, actions = gaussian_case(seed)
    expected = normal_log_density(actions, mean, np.exp(log_std)).sum(axis=1)
    got = run(lambda m, s, a: DiagGaussian(m, s).log_prob(a), *(tf.constant(x, tf.float64) for x in
                                                                 (mean, log_std, actions)))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # float32 stays accurate to float32 precision.
    got32 = run(lambda p, a: DiagGaussian.from_params(p).log_prob(a),
                tf.constant(np.concatenate([mean, log_std], 1), tf.float32), tf.constant(actions, tf.float32))
    np.testing.assert_allclose(got32, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_gaussian_entropy_is_half_log_2_pi_e_sigma_squared_per_dimension(run, seed):
    mean, log_std, _ = gaussian_case(seed)
    expected = (0.5 * np.log(2.0 * np.pi * np.e * np.exp(2.0 * log_std))).sum(axis=1)
    got = run(lambda m, s: DiagGaussian(m, s).entropy(), tf.constant(mean), tf.constant(log_std))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_gaussian_entropy_matches_a_monte_carlo_estimate():
    """H = -E[log pi(a)]: the analytic entropy against the mean of -log_prob of samples."""
    pi = DiagGaussian(tf.constant([[0.5, -1.0]] * 20_000, tf.float64), tf.constant([[-0.7, 0.4]] * 20_000, tf.float64))
    samples = pi.sample(seed=tf.constant([0, 1]))
    np.testing.assert_allclose(-np.mean(pi.log_prob(samples)), pi.entropy()[0], atol=0.03)


@pytest.mark.parametrize("seed", range(5))
def test_categorical_log_prob_and_entropy_match_closed_forms(run, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (64, 5))
    actions = rng.integers(0, 5, 64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_pi = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    got_log_prob = run(lambda x, a: Categorical(x).log_prob(a), tf.constant(logits), tf.constant(actions))
    np.testing.assert_allclose(got_log_prob, log_pi[np.arange(64), actions], rtol=1e-10)
    got_entropy = run(lambda x: Categorical(x).entropy(), tf.constant(logits))
    np.testing.assert_allclose(got_entropy, -(np.exp(log_pi) * log_pi).sum(axis=1), rtol=1e-10)


def test_categorical_log_prob_is_finite_for_extreme_logits():
    pi = Categorical(tf.constant([[1000.0, -1000.0, 0.0]]))
    np.testing.assert_allclose(pi.log_prob(tf.constant([1])), [-2000.0])
    assert np.isfinite(pi.entropy()).all()


def test_gaussian_std_is_clamped_so_float32_never_gives_nan():
    """A network that outputs a log std of +-1e30 (or an std that would underflow to 0)."""
    log_std = tf.Variable([[-1e30, 1e30, -200.0]], dtype=tf.float32)
    mean = tf.constant([[0.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        pi = DiagGaussian(mean, log_std)
        log_prob = pi.log_prob(tf.constant([[1.0, 1.0, 1.0]]))
        entropy = pi.entropy()
    np.testing.assert_allclose(pi.log_std, [[LOG_STD_MIN, LOG_STD_MAX, LOG_STD_MIN]])
    assert np.isfinite(log_prob).all() and np.isfinite(entropy).all()
    assert np.isfinite(tape.gradient(log_prob, log_std)).all()
    assert np.isfinite(pi.sample(seed=tf.constant([1, 2]))).all()
    np_actions = DiagGaussian.np_sample(np.array([[0.0, 0.0, 0.0, -1e30, 1e30, -200.0]], np.float32),
                                        np.random.default_rng(0))
    assert np.isfinite(np_actions).all()


def test_sampling_statistics_and_mode():
    mean, log_std = np.array([[1.5, -0.5]]), np.array([[-1.0, 0.5]])
    params = np.concatenate([mean, log_std], axis=1).astype(np.float32)
    rng = np.random.default_rng(0)
    numpy_samples = DiagGaussian.np_sample(np.repeat(params, 50_000, axis=0), rng)
    tf_samples = DiagGaussian.from_params(tf.repeat(params, 50_000, axis=0)).sample(seed=tf.constant([3, 4]))
    for samples in (numpy_samples, tf_samples.numpy()):
        np.testing.assert_allclose(samples.mean(axis=0), mean[0], atol=0.02)
        np.testing.assert_allclose(samples.std(axis=0), np.exp(log_std[0]), rtol=0.02)
    assert numpy_samples.dtype == np.float32
    np.testing.assert_array_equal(DiagGaussian.np_mode(params), mean.astype(np.float32))
    np.testing.assert_array_equal(DiagGaussian.from_params(params).mode(), mean.astype(np.float32))

    logits = np.log(np.array([[0.6, 0.3, 0.1]]))
    counts = np.bincount(Categorical.np_sample(np.repeat(logits, 50_000, axis=0), rng), minlength=3)
    np.testing.assert_allclose(counts / 50_000, [0.6, 0.3, 0.1], atol=0.01)
    tf_counts = np.bincount(Categorical(tf.repeat(logits, 50_000, axis=0)).sample(seed=tf.constant([5, 6])),
                            minlength=3)
    np.testing.assert_allclose(tf_counts / 50_000, [0.6, 0.3, 0.1], atol=0.01)
    assert Categorical.np_mode(logits)[0] == 0 == int(Categorical(logits).mode()[0])


def test_gaussian_sample_is_reparameterised():
    """d a / d mean = 1 and d a / d log_std = std * eps for a = mean + std * eps."""
    mean, log_std = tf.Variable([[0.3]]), tf.Variable([[-0.2]])
    with tf.GradientTape(persistent=True) as tape:
        action = DiagGaussian(mean, log_std).sample(seed=tf.constant([7, 8]))
    eps = (action - mean) / tf.exp(log_std)
    np.testing.assert_allclose(tape.gradient(action, mean), [[1.0]])
    np.testing.assert_allclose(tape.gradient(action, log_std), math.exp(-0.2) * eps, rtol=1e-5)


@pytest.mark.parametrize(
    "fn, args",
    [
        (lambda m, s, a: DiagGaussian(m, s).log_prob(a), (tf.zeros([4, 2]), tf.zeros([4, 2]), tf.zeros([4]))),
        (lambda m, s: DiagGaussian(m, s).entropy(), (tf.zeros([4, 2]), tf.zeros([4, 3]))),
        (lambda m, s: DiagGaussian(m, s).entropy(), (tf.zeros([4]), tf.zeros([4]))),
        (lambda x, a: Categorical(x).log_prob(a), (tf.zeros([4, 2]), tf.zeros([4, 1], tf.int32))),
    ],
)
def test_shape_checks(run, fn, args):
    with pytest.raises(ValueError, match="shape|rank"):
        run(fn, *args)


@pytest.mark.parametrize(
    "space, expected",
    [
        (gym.spaces.Discrete(3), Categorical),
        (gym.spaces.Box(-1.0, 1.0, (1,), np.float32), DiagGaussian),
        (gym.spaces.Box(-np.inf, np.inf, (4,), np.float64), DiagGaussian),
    ],
)
def test_distribution_for_supported_spaces(space, expected):
    assert distributions.for_action_space(space) is expected


@pytest.mark.parametrize(
    "space, message",
    [
        (gym.spaces.MultiBinary([2, 3]), "MultiBinary action spaces must be 1-D"),
        (gym.spaces.MultiDiscrete([[2, 3], [2, 2]]), "MultiDiscrete action spaces must be 1-D"),
        (gym.spaces.MultiDiscrete([2, 3], start=[0, 1]), "MultiDiscrete spaces must start at 0"),
        (gym.spaces.Dict({"a": gym.spaces.Discrete(2)}), "unsupported action space Dict"),
        (gym.spaces.Tuple((gym.spaces.Discrete(2),)), "unsupported action space Tuple"),
        (gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32), "must be 1-D"),
        (gym.spaces.Box(-1, 1, (2,), np.int64), "float dtype"),
        (gym.spaces.Discrete(3, start=1), "start at 0"),
    ],
)
def test_unsupported_spaces_are_named(space, message):
    with pytest.raises(ValueError, match=message):
        distributions.for_action_space(space)


def test_multidiscrete_and_multibinary_families():
    family = distributions.for_action_space(gym.spaces.MultiDiscrete([3, 2, 4]))
    assert isinstance(family, MultiCategoricalFamily) and family.nvec == (3, 2, 4) and family.num_params(None) == 9
    assert distributions.for_action_space(gym.spaces.MultiBinary(5)) is Bernoulli
    assert Bernoulli.num_params(gym.spaces.MultiBinary(5)) == 5


# Two parts: softmax(0, ln 3) = (1/4, 3/4) and softmax(0, 0, 0) = (1/3, 1/3, 1/3).
MULTI_LOGITS = tf.constant([[0.0, math.log(3.0), 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 5.0, 0.0, -5.0]])


def test_multicategorical_log_prob_and_entropy_by_hand(run):
    actions = tf.constant([[1, 2], [1, 0]])

    def fn(logits, actions):
        pi = MultiCategorical(logits, (2, 3))
        return pi.log_prob(actions), pi.entropy(), pi.mode()

    log_prob, entropy, mode = run(fn, MULTI_LOGITS, actions)
    third = np.exp([5.0, 0.0, -5.0]) / np.exp([5.0, 0.0, -5.0]).sum()
    np.testing.assert_allclose(log_prob, [math.log(0.75) + math.log(1 / 3), math.log(0.25) + math.log(third[0])],
                               rtol=1e-5)
    h_first = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(entropy, [h_first + math.log(3.0), h_first - np.sum(third * np.log(third))], rtol=1e-5)
    np.testing.assert_array_equal(mode, [[1, 0], [0, 0]])
    assert mode.dtype == tf.int64


def test_bernoulli_log_prob_and_entropy_by_hand(run):
    logits = tf.constant([[0.0, math.log(3.0)], [-100.0, 100.0]])  # p = (1/2, 3/4), then ~(0, 1)
    actions = tf.constant([[1, 0], [0, 0]])

    def fn(logits, actions):
        pi = Bernoulli(logits)
        return pi.log_prob(actions), pi.entropy(), pi.mode()

    log_prob, entropy, mode = run(fn, logits, actions)
    np.testing.assert_allclose(log_prob, [math.log(0.5) + math.log(0.25), -100.0], rtol=1e-6)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    np.testing.assert_allclose(entropy, [math.log(2.0) + h, 0.0], rtol=1e-6, atol=1e-30)
    assert np.isfinite(log_prob).all() and np.isfinite(entropy).all()
    np.testing.assert_array_equal(mode, [[0, 1], [0, 1]])


def test_factorised_sampling_statistics_numpy_and_tensorflow():
    """Empirical frequencies of the numpy twins and of the stateless TF samplers match pi, part by part."""
    n = 20_000
    logits = np.tile(MULTI_LOGITS.numpy()[1:], (n, 1)).astype(np.float32)
    probs = [np.array([0.75, 0.25]), np.exp([5.0, 0.0, -5.0]) / np.exp([5.0, 0.0, -5.0]).sum()]
    family = MultiCategoricalFamily((2, 3))
    for samples in (family.np_sample(logits, np.random.default_rng(0)),
                    MultiCategorical(logits, (2, 3)).sample(tf.constant([1, 2], tf.int64)).numpy()):
        assert samples.shape == (n, 2)
        for k, p in enumerate(probs):
            np.testing.assert_allclose(np.bincount(samples[:, k], minlength=len(p)) / n, p, atol=0.015)
    np.testing.assert_array_equal(family.np_mode(logits[:2]), [[0, 0], [0, 0]])
    bits = np.tile(np.array([[0.0, math.log(3.0), -2.0]], np.float32), (n, 1))
    p_bits = 1.0 / (1.0 + np.exp(-bits[0]))
    for samples in (Bernoulli.np_sample(bits, np.random.default_rng(0)),
                    Bernoulli(bits).sample(tf.constant([3, 4], tf.int64)).numpy()):
        assert samples.shape == (n, 3) and set(np.unique(samples)) <= {0, 1}
        np.testing.assert_allclose(samples.mean(axis=0), p_bits, atol=0.015)
    np.testing.assert_array_equal(Bernoulli.np_mode(bits[:1]), [[0, 1, 0]])


def test_multicategorical_checks_the_width_of_its_logits():
    with pytest.raises(ValueError, match=r"MultiDiscrete\[2, 3\] needs 5 logits per row, got 4"):
        MultiCategorical(tf.zeros([2, 4]), (2, 3))
