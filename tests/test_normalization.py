"""Reward and observation normalisation: the running statistics against numpy, the layer inside the
network (updated during fit, frozen outside it, saved and exported with it), the reward scale."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from envs import IdentityEnv, ScaledIdentityEnv, one_faulty
from recording import record_segments

import keras_a3c
from keras_a3c.acting import numpy_forward, weights_of
from keras_a3c.normalization import ObservationNormalization, RewardNormalizer, merge_moments

TESTS = os.path.dirname(os.path.abspath(__file__))


def test_merged_moments_are_those_of_all_the_data():
    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 2.0, (n, 2)) for n in (5, 1, 40)]
    mean, var, count = np.zeros(2), np.ones(2), 0.0
    for part in parts:
        mean, var, count = merge_moments(mean, var, count, part.mean(0), part.var(0), len(part))
    data = np.concatenate(parts)
    np.testing.assert_allclose(mean, data.mean(0))
    np.testing.assert_allclose(var, data.var(0))
    assert count == 46


def test_reward_normalizer_scales_by_the_std_of_the_discounted_returns_and_clips():
    normalizer = RewardNormalizer(gamma=0.9, clip=5.0)
    returns = np.array([10.0, 20.0, 30.0, 40.0])
    scale = normalizer.update(returns[:1])
    scale = normalizer.update(returns[1:])
    # VecNormalize's prior (mean 0, var 1, count 1e-4) weighs 1e-4 against the 4 returns.
    expected_var = merge_moments(0.0, 1.0, 1e-4, returns.mean(), returns.var(), 4)[1]
    assert scale == pytest.approx(1 / np.sqrt(expected_var + 1e-8))
    rewards = np.array([1.0, -100.0, 0.5], np.float32)
    normalizer.normalize(rewards, scale)
    np.testing.assert_allclose(rewards, [scale, -5.0, 0.5 * scale], rtol=1e-6)


@pytest.fixture(params=["eager", "tf_function"])
def run(request):
    return (lambda fn, *a: fn(*a)) if request.param == "eager" else (lambda fn, *a: tf.function(fn)(*a))


def test_the_layer_takes_in_only_the_valid_rows_and_normalises_with_them(run):
    layer = ObservationNormalization(clip=None)
    layer.build((None, 3))
    rng = np.random.default_rng(1)
    batches = [rng.normal([5.0, -2.0, 0.0], [3.0, 0.5, 1.0], (n, 3)).astype(np.float32) for n in (6, 9)]
    masks = [np.array([1, 1, 0, 1, 1, 1], bool), np.ones(9, bool)]
    for x, mask in zip(batches, masks, strict=True):
        run(layer.update_statistics, tf.constant(x), tf.constant(mask))
    seen = np.concatenate([x[m] for x, m in zip(batches, masks, strict=True)])
    np.testing.assert_allclose(layer.mean.numpy(), seen.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.variance.numpy(), seen.var(0), rtol=1e-4)
    assert float(layer.count.numpy()) == len(seen)
    np.testing.assert_allclose(layer(seen), (seen - seen.mean(0)) / np.sqrt(seen.var(0) + 1e-8), atol=1e-4)
    # A batch without a valid row changes nothing.
    run(layer.update_statistics, tf.zeros([4, 3]), tf.zeros([4], tf.bool))
    np.testing.assert_allclose(layer.mean.numpy(), seen.mean(0), rtol=1e-5)
    assert ObservationNormalization(clip=2.0)(np.full((1, 3), 1e3, np.float32)).numpy().max() <= 2.0


def make_agent(env=ScaledIdentityEnv, **compile_kwargs):
    spec = env()
    network = keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space, (32,),
                                         normalize_observations=True)
    agent = keras_a3c.A3C(network)
    agent.compile(keras.optimizers.Adam(3e-3), **compile_kwargs)
    return agent


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    agent = make_agent(entropy_coef=0.01, n_steps=5)
    history = agent.fit(ScaledIdentityEnv, total_steps=30_000, workers=2, envs_per_worker=4, verbose=0, seed=0)
    return agent, history


def test_fit_learns_the_observation_statistics_and_predict_leaves_them_alone(trained):
    agent, _ = trained
    layer = agent.network.get_layer("observation_normalization")
    # One-hot targets of 4, scaled by 50 around 100: mean 112.5, variance 50^2 * 3/16.
    np.testing.assert_allclose(layer.mean.numpy(), 112.5, rtol=0.05)
    np.testing.assert_allclose(layer.variance.numpy(), 2500 * 3 / 16, rtol=0.1)
    assert float(layer.count.numpy()) > 20_000
    before = [w.numpy().copy() for w in layer.weights]
    agent.predict(np.full((3, 4), 125.0, np.float32))
    agent.evaluate(ScaledIdentityEnv, episodes=3)
    for b, w in zip(before, layer.weights, strict=True):
        np.testing.assert_array_equal(b, w.numpy())  # frozen outside fit


def test_the_numpy_twin_normalises_like_the_layer(trained):
    agent, _ = trained
    forward = numpy_forward(agent.network)
    assert forward is not None
    obs = np.random.default_rng(2).uniform(90, 160, (16, 4)).astype(np.float32)
    params, values, _ = forward(weights_of(agent.network), obs)
    keras_params, keras_values = agent.network(obs)
    np.testing.assert_allclose(params, keras_params, atol=1e-4)
    np.testing.assert_allclose(values, np.ravel(keras_values), atol=1e-4)


def test_it_learns_from_observations_far_from_zero(trained):
    agent, history = trained
    assert history.history["episode_return"][-1] > 8.0  # of 10; a uniform policy earns 2.5
    mean, _ = agent.evaluate(ScaledIdentityEnv, episodes=20)
    assert mean > 9.0


def test_the_statistics_survive_save_and_load(trained, tmp_path):
    agent, _ = trained
    loaded = keras_a3c.load(agent.save(tmp_path / "agent"))
    for a, b in zip(agent.network.weights, loaded.network.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    obs = np.random.default_rng(3).uniform(90, 160, (8, 4)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs), loaded.predict(obs))


SERVE_RAW_OBSERVATIONS = """
import json, sys
import numpy as np
import tensorflow as tf
sys.path.insert(0, sys.argv[2])
from envs import ScaledIdentityEnv
policy = tf.saved_model.load(sys.argv[1])
obs = np.array(json.loads(sys.argv[3]), np.float32)
actions = policy.serve(tf.constant(obs)).numpy().tolist()
returns = []
for episode in range(20):
    env = ScaledIdentityEnv()
    o, _ = env.reset(seed=episode)
    total, done = 0.0, False
    while not done:
        o, r, terminated, truncated, _ = env.step(int(policy.serve(tf.constant(o[None]))[0]))
        total, done = total + r, terminated or truncated
    returns.append(total)
print(json.dumps({"actions": actions, "mean": float(np.mean(returns)),
                  "keras_a3c": "keras_a3c" in sys.modules}))
"""


def test_the_exported_policy_takes_raw_observations_and_scores_as_in_training(trained, tmp_path):
    agent, _ = trained
    agent.export(tmp_path / "policy")
    obs = np.random.default_rng(4).uniform(90, 160, (6, 4)).astype(np.float32)
    out = subprocess.run([sys.executable, "-c", SERVE_RAW_OBSERVATIONS, str(tmp_path / "policy"), TESTS,
                          json.dumps(obs.tolist())], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    served = json.loads(out.stdout.strip().splitlines()[-1])
    assert not served["keras_a3c"]
    np.testing.assert_array_equal(served["actions"], agent.predict(obs))
    mean, _ = agent.evaluate(ScaledIdentityEnv, episodes=20)
    assert served["mean"] > 9.0 and abs(served["mean"] - mean) <= 0.5


def test_reward_normalisation_is_saved_and_resumes_exactly(tmp_path):
    agent = make_agent(normalize_rewards=True)
    history = agent.fit(lambda: ScaledIdentityEnv(reward_scale=100.0), total_steps=3000, workers=2,
                        envs_per_worker=4, verbose=0, seed=0)
    # Logged returns stay raw: 100 per correct step, at most 1000 an episode.
    returns = history.episodes["return"]
    assert returns.max() > 100.0 and np.all(returns % 100.0 == 0)
    moments = agent.reward_normalizer.state_dict()["reward_norm_moments"]
    assert moments[2] > 2000 and moments[1] > 100.0  # count, variance of returns of size ~100s
    loaded = keras_a3c.load(agent.save(tmp_path / "agent"))
    np.testing.assert_array_equal(loaded.reward_normalizer.state_dict()["reward_norm_moments"], moments)
    assert loaded.config.normalize_rewards


@pytest.mark.parametrize("reward_scale", [1.0, 100.0])
def test_with_reward_normalisation_rewards_100_times_larger_learn_as_well(reward_scale):
    """With the library's defaults (network, optimizer and config)."""
    keras.utils.set_random_seed(1)
    spec = ScaledIdentityEnv(reward_scale=reward_scale)
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space))
    agent.compile()
    agent.fit(lambda: ScaledIdentityEnv(reward_scale=reward_scale), total_steps=150_000, workers=2,
              envs_per_worker=4, verbose=0, seed=1)
    mean, _ = agent.evaluate(lambda: ScaledIdentityEnv(reward_scale=reward_scale), episodes=20)
    assert mean / reward_scale > 9.0


def test_a_non_finite_observation_stops_fit_before_the_statistics_see_it():
    agent = make_agent(IdentityEnv)
    with pytest.raises(FloatingPointError, match="observation has a non-finite value nan"):
        agent.fit(one_faulty(1, fail_after=25, mode="nan"), total_steps=10**9, workers=2, envs_per_worker=2,
                  verbose=0)
    layer = agent.network.get_layer("observation_normalization")
    assert all(np.isfinite(w.numpy()).all() for w in layer.weights)


def test_reward_normalisation_keeps_rewards_too_large_for_float32_returns_trainable():
    """Rewards of 3e38 overflow a float32 n-step return (see test_faults); normalised in float64 and clipped,
    the learner sees finite rewards and trains on."""
    agent = make_agent(IdentityEnv, normalize_rewards=True)
    agent.fit(one_faulty(1, fail_after=40, mode="huge_reward"), total_steps=2000, workers=2, envs_per_worker=2,
              verbose=0)
    assert agent.env_steps >= 2000
    assert all(np.isfinite(v.numpy()).all() for v in agent.network.weights)


def test_clip_raw_rewards_clips_what_the_learner_sees_and_the_log_keeps_raw_returns(monkeypatch):
    """The Atari papers' reward clipping: rewards of 25 reach the learner as 1, and the logged episode
    returns are still multiples of 25."""
    segments = record_segments(monkeypatch)
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(ScaledIdentityEnv().observation_space,
                                                     ScaledIdentityEnv().action_space))
    agent.compile(normalize_rewards=False, clip_raw_rewards=1.0)
    history = agent.fit(lambda: ScaledIdentityEnv(reward_scale=25.0), total_steps=2_000, workers=2,
                        envs_per_worker=4, verbose=0, seed=0)
    rewards = np.concatenate([segment[0][:-1, :, -4] for segment in segments])  # the reward column
    assert set(np.unique(rewards)) == {0.0, 1.0}
    returns = history.episodes["return"]
    assert len(returns) > 10 and returns.max() > 1.0 and np.all(returns % 25.0 == 0.0)
    with pytest.raises(ValueError, match="clip_raw_rewards must be > 0 or None"):
        keras_a3c.A3CConfig(clip_raw_rewards=0.0)
