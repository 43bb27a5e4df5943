"""Image observations: `actor_critic_cnn` takes the env's own dtype (uint8 scaled by 1/255 inside the
network, bool as 0 / 1), segments store images in one byte a pixel, the policy learns, and the exported
policy declares the env's dtype, also takes float32, and serves predict's actions without keras_a3c."""

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf
from envs import ImageIdentityEnv
from served import serve_without_keras_a3c, tflite_interpreter

import keras_a3c
from keras_a3c.acting import numpy_forward, weights_of
from keras_a3c.observations import ObservationCodec


def image_batch(dtype, n=16):
    env = ImageIdentityEnv(dtype)
    return np.stack([env.reset(seed=seed)[0] for seed in range(n)])


def test_the_cnn_builders_follow_the_papers_and_take_the_env_s_dtype():
    atari = keras_a3c.actor_critic_cnn(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), gym.spaces.Discrete(6))
    assert atari.input.dtype == "uint8"
    convs = [layer for layer in atari.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.strides) for c in convs] == [(16, (8, 8), (4, 4)), (32, (4, 4), (2, 2))]
    assert atari.get_layer("trunk_0").units == 256
    minatar = keras_a3c.actor_critic_cnn(gym.spaces.Box(0, 1, (10, 10, 4), bool), gym.spaces.Discrete(3), "minatar")
    assert minatar.input.dtype == "bool" and minatar.get_layer("trunk_0").units == 128
    frames = np.random.default_rng(0).integers(0, 256, (3, 84, 84, 4)).astype(np.uint8)
    np.testing.assert_allclose(atari(frames)[0], atari(frames.astype(np.float32))[0], atol=1e-6)
    gray = keras_a3c.actor_critic_cnn(gym.spaces.Box(0, 255, (84, 84), np.uint8), gym.spaces.Discrete(2))
    assert gray(frames[..., 0])[0].shape == (3, 2)
    codec = ObservationCodec.for_space(gym.spaces.Box(0, 1, (10, 10, 4), bool), minatar)
    assert codec.groups == [np.uint8] and codec.input_dtypes == [tf.bool]
    with pytest.raises(ValueError, match=r"actor_critic_cnn needs a Box observation space of shape \[H, W, C\]"):
        keras_a3c.actor_critic_cnn(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        keras_a3c.actor_critic_cnn(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), gym.spaces.Discrete(2), "resnet")


@pytest.mark.parametrize("dtype", [np.uint8, bool])
def test_a_cnn_learns_from_images_and_its_export_takes_the_env_s_dtype(dtype, tmp_path):
    keras.utils.set_random_seed(0)
    env = ImageIdentityEnv(dtype)
    agent = keras_a3c.A3C(keras_a3c.actor_critic_cnn(env.observation_space, env.action_space, "minatar"))
    agent.compile(keras.optimizers.Adam(1e-3), gamma=0.0, n_steps=5)
    agent.fit(lambda: ImageIdentityEnv(dtype), total_steps=6000, workers=2, envs_per_worker=8, verbose=0, seed=1)
    assert agent.train_trace_count == 1
    greedy, _ = agent.evaluate(lambda: ImageIdentityEnv(dtype), episodes=20)
    assert greedy >= 9.5  # random: 2.5

    obs = image_batch(dtype)
    expected = agent.predict(obs)
    agent.export(str(tmp_path / "policy"))
    policy = tf.saved_model.load(str(tmp_path / "policy"))
    spec = policy.signatures["serve"].structured_input_signature[1]["observations"]
    assert spec.dtype == tf.as_dtype(dtype) and tuple(spec.shape) == (None, 10, 10, 2)
    np.testing.assert_array_equal(policy.serve(tf.constant(obs)), expected)
    np.testing.assert_array_equal(policy.serve(tf.constant(obs.astype(np.float32))), expected)
    result = serve_without_keras_a3c(tmp_path / "policy", {"observations": obs})
    assert result["imported"] == ["tensorflow"]
    np.testing.assert_array_equal(result["actions"], expected)

    agent.export(str(tmp_path / "policy.tflite"), format="tflite")
    interpreter = tflite_interpreter(str(tmp_path / "policy.tflite"))
    (detail,) = interpreter.get_input_details()
    assert detail["dtype"] == np.dtype(dtype)
    interpreter.resize_tensor_input(detail["index"], obs.shape)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner("serve")
    np.testing.assert_array_equal(runner(observations=obs)["actions"], expected)

    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    agent.export(str(tmp_path / "policy.onnx"), format="onnx")
    result = serve_without_keras_a3c(tmp_path / "policy.onnx", {"observations": obs})
    assert result["imported"] == []
    np.testing.assert_array_equal(result["actions"], expected)


@pytest.mark.parametrize("space, architecture", [
    (gym.spaces.Box(0, 1, (10, 10, 4), bool), "minatar"),
    (gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), "atari"),
    (gym.spaces.Box(0, 255, (84, 84), np.uint8), "atari"),  # one channel: a Reshape before the first Conv2D
])
def test_the_numpy_twin_of_a_cnn_matches_keras(space, architecture):
    network = keras_a3c.actor_critic_cnn(space, gym.spaces.Discrete(3), architecture)
    forward = numpy_forward(network)
    rng = np.random.default_rng(1)
    obs = rng.integers(0, int(space.high.flat[0]) + 1, (5, *space.shape)).astype(space.dtype)
    params, values, _ = forward(weights_of(network), obs)
    keras_params, keras_values = network(obs)
    np.testing.assert_allclose(params, keras_params, atol=1e-5)
    np.testing.assert_allclose(values, np.ravel(keras_values), atol=1e-5)


def test_a_convolution_the_twin_does_not_know_acts_through_tensorflow():
    inputs = keras.Input((10, 10, 2))
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs))
    assert numpy_forward(keras.Model(inputs, [keras.layers.Dense(4)(x), keras.layers.Dense(1)(x)])) is None
