"""Gaussian policies for Box action spaces: the head, its numpy twin, bounds, fit/export for every action-space kind."""

import threading
import time

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf
from envs import (
    BeyondTheBoundEnv,
    ContinuousIdentityEnv,
    DictObservation,
    IdentityEnv,
    MultiBinaryIdentityEnv,
    MultiDiscreteIdentityEnv,
    SpaceEnv,
)
from served import tflite_interpreter

import keras_a3c
from keras_a3c.acting import ActionSampler, numpy_forward, weights_of
from keras_a3c.distributions import LOG_STD_MAX
from keras_a3c.networks import GaussianHead, log_softplus

BOX1 = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
BOX3 = gym.spaces.Box(np.array([-1.0, -2.0, 0.0], np.float32), np.array([1.0, 2.0, 0.5], np.float32), (3,), np.float32)
OBS = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)


def worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("a3c-worker")]


@pytest.mark.parametrize("std", ["state_independent", "softplus"])
@pytest.mark.parametrize("action_space", [BOX1, BOX3], ids=["box1", "box3"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gaussian_head_numpy_twin_matches_keras(std, action_space, activation):
    net = keras_a3c.actor_critic_mlp(OBS, action_space, (16, 8), activation=activation, std=std, log_std_init=-0.5)
    # Move every weight away from its initial value, so the log std is not a constant.
    for v in net.trainable_variables:
        v.assign(v + np.random.default_rng(len(v.shape)).normal(0.0, 0.3, v.shape).astype(np.float32))
    forward = numpy_forward(net)
    assert forward is not None
    obs = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    params, values, _ = forward(weights_of(net), obs)
    k_params, k_values = net(obs)
    assert params.shape == (64, 2 * action_space.shape[0])
    np.testing.assert_allclose(params, k_params, atol=1e-5)
    np.testing.assert_allclose(values, np.ravel(k_values), atol=1e-5)
    if std == "softplus":
        assert np.ptp(params[:, action_space.shape[0]:]) > 1e-3  # state-dependent log std


@pytest.mark.parametrize("std", ["state_independent", "softplus"])
def test_gaussian_head_initial_log_std(std):
    net = keras_a3c.actor_critic_mlp(OBS, BOX3, (8,), std=std, log_std_init=-1.2)
    params, _ = net(np.random.default_rng(1).normal(size=(16, 5)).astype(np.float32))
    np.testing.assert_allclose(params[:, 3:], -1.2, atol=0.05)
    np.testing.assert_allclose(params[:, :3], 0.0, atol=0.1)  # small initial means


def test_log_softplus_is_finite_with_finite_gradient_everywhere():
    z = tf.Variable([-1e30, -1e4, -100.0, -20.5, -19.5, 0.0, 30.0, 1e30])
    with tf.GradientTape() as tape:
        y = log_softplus(z)
    grad = tape.gradient(y, z)
    assert np.isfinite(y).all() and np.isfinite(grad).all()
    expected = np.log(np.log1p(np.exp(np.array([-19.5, 0.0, 30.0], np.float64))))
    np.testing.assert_allclose(y.numpy()[[4, 5, 6]], expected, rtol=1e-5)
    np.testing.assert_allclose(y.numpy()[:4], [-1e30, -1e4, -100.0, -20.5], rtol=1e-6)


def test_gaussian_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match="std must be one of"):
        GaussianHead(2, std="exp")
    with pytest.raises(ValueError, match="action_dim"):
        GaussianHead(0)


def test_action_sampler_clips_for_the_env_but_keeps_the_sample():
    sampler = ActionSampler(BOX3)
    params = np.array([[5.0, -5.0, 0.25, LOG_STD_MAX, LOG_STD_MAX, LOG_STD_MAX]], np.float32)
    actions = sampler.sample(np.repeat(params, 1000, axis=0), np.random.default_rng(0))
    assert actions.shape == (1000, 3) and actions.dtype == np.float32
    assert (actions[:, 0] > 1.0).mean() > 0.5  # the sample itself is not clipped
    env_actions = sampler.to_env(actions)
    assert all(BOX3.contains(a) for a in env_actions)
    inside = (actions >= BOX3.low) & (actions <= BOX3.high)
    np.testing.assert_array_equal(env_actions[inside], actions[inside])
    np.testing.assert_array_equal(sampler.mode(params), [[5.0, -5.0, 0.25]])
    discrete = ActionSampler(gym.spaces.Discrete(3))
    assert discrete.shape == () and discrete.dtype == np.int32
    np.testing.assert_array_equal(discrete.to_env(np.array([2, 0])), [2, 0])


ACTION_SPACE_KINDS = {
    "discrete": IdentityEnv,
    "box1": lambda: ContinuousIdentityEnv(dim=1),
    "box3": lambda: ContinuousIdentityEnv(dim=3),
    "multidiscrete": MultiDiscreteIdentityEnv,
    "multibinary": MultiBinaryIdentityEnv,
}


def observation_batch(space: gym.Space, n: int):
    """n observations of a Box space, or of DictObservation's Dict: {"x": ..., "flag": int32, "bits": float32}."""
    rng = np.random.default_rng(0)
    if isinstance(space, gym.spaces.Dict):
        return {"x": observation_batch(space["x"], n), "flag": rng.integers(0, 2, n).astype(np.int32),
                "bits": rng.integers(0, 2, (n, 3)).astype(np.float32)}
    return rng.uniform(-1.0, 1.0, (n, *space.shape)).astype(np.float32)


@pytest.mark.parametrize("observed", ["box", "dict"])
@pytest.mark.parametrize("kind", list(ACTION_SPACE_KINDS))
def test_every_action_space_kind_fits_exports_and_reloads(kind, observed, tmp_path):
    """Every action space x a Box and a Dict observation x SavedModel, TFLite and ONNX."""
    env_fn = ACTION_SPACE_KINDS[kind] if observed == "box" else lambda: DictObservation(ACTION_SPACE_KINDS[kind]())
    env = env_fn()
    # A wide initial std (e^1.5 ~ 4.5) samples far outside [-1, 1]: the env asserts it only sees clipped actions.
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (16,), log_std_init=1.5))
    agent.compile(optimizer=keras.optimizers.Adam(1e-3), n_steps=5)
    history = agent.fit(env_fn, total_steps=400, workers=2, envs_per_worker=4, verbose=0)
    assert history.history["env_steps"][-1] >= 400
    assert np.isfinite(history.history["loss"]).all()
    assert agent.train_trace_count == 1
    assert agent.action_space == env.action_space
    assert not worker_threads()

    path = tmp_path / "policy"
    agent.export(str(path))
    policy = tf.saved_model.load(str(path))
    obs = observation_batch(env.observation_space, 32)
    one = {key: value[0] for key, value in obs.items()} if observed == "dict" else obs[0]
    tf_obs = tf.nest.map_structure(tf.constant, obs)
    served = policy.serve(tf_obs).numpy()
    params, values = agent.network(obs)
    np.testing.assert_allclose(policy.value(tf_obs), np.ravel(values), atol=1e-5)
    np.testing.assert_allclose(policy.action_distribution(tf_obs), params, atol=1e-5)
    if kind == "discrete":
        assert served.shape == (32,) and served.dtype == np.int64
        np.testing.assert_array_equal(served, agent.predict(obs))
    elif kind.startswith("multi"):
        width = env.action_space.shape[0]
        assert served.shape == (32, width) and served.dtype == np.int64
        assert all(env.action_space.contains(a) for a in served)
        np.testing.assert_array_equal(served, agent.predict(obs))
        assert agent.predict(one).shape == (width,)
        sampled = policy.sample(tf_obs, tf.constant(3, tf.int64)).numpy()
        assert sampled.shape == (32, width) and all(env.action_space.contains(a) for a in sampled)
        np.testing.assert_array_equal(sampled, policy.sample(tf_obs, tf.constant(3, tf.int64)))
        assert all(env.action_space.contains(a) for a in agent.predict(obs, deterministic=False, seed=0))
    else:
        dim = env.action_space.shape[0]
        assert served.shape == (32, dim) and served.dtype == np.float32
        assert all(env.action_space.contains(a) for a in served)
        np.testing.assert_allclose(served, np.clip(params[:, :dim], -1.0, 1.0), atol=1e-6)
        np.testing.assert_allclose(served, agent.predict(obs), atol=1e-6)
        assert agent.predict(one).shape == (dim,)
        sampled = agent.predict(obs, deterministic=False, seed=0)
        assert all(env.action_space.contains(a) for a in sampled)
        assert not np.allclose(sampled, served)
    mean, std = agent.evaluate(env_fn, episodes=4)
    assert np.isfinite(mean) and std >= 0.0
    loaded = keras_a3c.load(agent.save(tmp_path / "agent"))
    assert loaded.action_space == env.action_space
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))

    named = obs if observed == "dict" else {"observations": obs}  # the exports' inputs, by name
    agent.export(str(tmp_path / "policy.tflite"), format="tflite")
    interpreter = tflite_interpreter(str(tmp_path / "policy.tflite"))
    for detail in interpreter.get_input_details():  # named "serve_<input name>:0"
        name = detail["name"].removeprefix("serve_").rsplit(":", 1)[0]
        interpreter.resize_tensor_input(detail["index"], named[name].shape)
    interpreter.allocate_tensors()
    lite = interpreter.get_signature_runner("serve")(**named)["actions"]
    assert lite.dtype == served.dtype and lite.shape == served.shape
    np.testing.assert_allclose(lite, served, atol=1e-5)

    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    agent.export(str(tmp_path / "policy.onnx"), format="onnx")
    onnx_policy = onnxruntime.InferenceSession(str(tmp_path / "policy.onnx"))
    onnx_actions = onnx_policy.run(["actions"], named)[0]
    assert onnx_actions.dtype == served.dtype and onnx_actions.shape == served.shape
    np.testing.assert_allclose(onnx_actions, served, atol=1e-5)


def test_continuous_identity_env_learns_within_seconds():
    """Acting 0 scores about -2.1 per episode and acting on the observation 0; the Gaussian mean must learn it."""
    env = ContinuousIdentityEnv(dim=1)
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (32,),
                                                     log_std_init=-1.0))
    agent.compile(optimizer=keras.optimizers.Adam(3e-3), entropy_coef=0.0, gamma=0.0, n_steps=5)
    start = time.perf_counter()
    before, _ = agent.evaluate(ContinuousIdentityEnv, episodes=20)
    agent.fit(ContinuousIdentityEnv, total_steps=20_000, workers=2, envs_per_worker=8, verbose=0, seed=1)
    mean, _ = agent.evaluate(ContinuousIdentityEnv, episodes=20)
    assert time.perf_counter() - start < 60
    assert before < -1.0
    assert mean >= -0.1


def test_gaussian_policy_trains_through_tensorflow_when_the_numpy_twin_does_not_know_the_network():
    inputs = keras.Input((1,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(8, activation="tanh")(inputs)])  # not a chain
    model = keras.Model(inputs, [GaussianHead(1)(x), keras.layers.Dense(1)(x)])
    assert numpy_forward(model) is None  # acts through TensorFlow instead
    agent = keras_a3c.A3C(model)
    agent.compile(optimizer="adam")
    history = agent.fit(ContinuousIdentityEnv, total_steps=1000, workers=2, envs_per_worker=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert agent.predict(np.zeros((3, 1), np.float32)).shape == (3, 1)


@pytest.mark.parametrize(
    "space, message",
    [
        (gym.spaces.MultiBinary([2, 2]), "unsupported action space MultiBinary.*1-D"),
        (gym.spaces.MultiDiscrete([2, 2], start=[1, 0]), "unsupported action space MultiDiscrete.*start at 0"),
        (gym.spaces.Dict({"a": gym.spaces.Discrete(4)}), "unsupported action space Dict"),
        (gym.spaces.Tuple((gym.spaces.Discrete(4),)), "unsupported action space Tuple"),
        (gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32), "unsupported action space Box.*1-D"),
    ],
)
def test_fit_rejects_unsupported_action_spaces_before_any_thread_starts(space, message):
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(OBS, BOX1))
    agent.compile(optimizer="adam")
    with pytest.raises(ValueError, match=message):
        agent.fit(lambda: SpaceEnv(space), total_steps=1000, verbose=0)
    assert not worker_threads()
    with pytest.raises(ValueError, match=message):
        keras_a3c.A3C(keras_a3c.actor_critic_mlp(OBS, BOX1), action_space=space)


def test_env_with_another_action_space_than_the_agent_is_rejected():
    env = ContinuousIdentityEnv(dim=1)
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (8,)),
                          action_space=gym.spaces.Box(-2.0, 2.0, (1,), np.float32))
    agent.compile(optimizer="adam")
    with pytest.raises(ValueError, match="differs from the agent's action space"):
        agent.fit(ContinuousIdentityEnv, total_steps=100, verbose=0)
    assert not worker_threads()


def test_network_for_another_kind_of_action_space_is_named():
    obs_space = IdentityEnv().observation_space
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(obs_space, BOX1))
    agent.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"\(logits\) must have shape \[B, 4\]"):  # 2 params, 4 logits
        agent.fit(IdentityEnv, total_steps=100, verbose=0)
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(obs_space, gym.spaces.Discrete(3)))
    agent.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"\(Gaussian mean and log std\) must have shape \[B, 2\]"):
        agent.fit(lambda: SpaceEnv(BOX1), total_steps=100, verbose=0)
    assert not worker_threads()


def test_the_action_bound_loss_keeps_the_gaussian_mean_inside_the_bounds():
    """BeyondTheBoundEnv's best action is the bound, and any mean beyond it acts the same: without the
    action bound loss the mean drifts out (the greedy policy still scores, but the mean is no longer an
    action); with the default weight it learns the same score with the mean at the bound."""
    obs = np.array([[1.0], [-1.0]], np.float32)
    means = {}
    for coef in (0.0, keras_a3c.A3CConfig().action_bound_coef):
        keras.utils.set_random_seed(0)
        env = BeyondTheBoundEnv()
        agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (16,)))
        agent.compile(keras.optimizers.Adam(1e-2), action_bound_coef=coef, gamma=0.0)
        agent.fit(BeyondTheBoundEnv, total_steps=40_000, workers=2, envs_per_worker=8, verbose=0, seed=1)
        mean, _ = agent.evaluate(BeyondTheBoundEnv, episodes=10)
        assert mean >= -2.6  # the best policy scores 10 * -(1 - 1.5)^2 = -2.5
        means[coef] = np.asarray(agent.network(obs)[0])[:, 0] * [1.0, -1.0]  # the means, signed towards the bound
    assert (means[0.0] > 2.0).all(), means
    assert (np.abs(means[1.0] - 1.0) < 0.3).all(), means
