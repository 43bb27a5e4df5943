"""Dict and Tuple observations: the codec that flattens them into segment rows and gives them back to the
network, the builder's one input per entry, learning, per-entry normalisation, predict, save and export."""


import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf
from envs import DictIdentityEnv, TupleIdentityEnv
from served import serve_without_keras_a3c

import keras_a3c
from keras_a3c.normalization import observation_normalizers
from keras_a3c.observations import ObservationCodec
from keras_a3c.segment import SegmentLayout

SPACE = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (2, 2), np.uint8), "room": gym.spaces.Discrete(5),
                         "speed": gym.spaces.Box(-1.0, 1.0, (3,), np.float32)})


def batch_of(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, 2, 2)).astype(np.uint8), "room": rng.integers(0, 5, n),
            "speed": rng.uniform(-1, 1, (n, 3)).astype(np.float32)}


def test_the_codec_stores_each_entry_in_its_dtype_side_by_side_in_key_order_and_gives_them_back():
    codec = ObservationCodec.for_space(SPACE)
    assert codec.keys == ["image", "room", "speed"]
    assert codec.groups == [np.float32, np.uint8, np.int32] and codec.group_sizes == [3, 4, 1]
    obs = batch_of(6)
    rows = codec.rows(obs)
    assert [(row.dtype, row.shape) for row in rows] == [(np.float32, (6, 3)), (np.uint8, (6, 4)), (np.int32, (6, 1))]
    np.testing.assert_array_equal(rows[0], obs["speed"])
    np.testing.assert_array_equal(rows[1], obs["image"].reshape(6, 4))
    np.testing.assert_array_equal(rows[2][:, 0], obs["room"])
    tensors = [tf.constant(row) for row in rows]
    for back in (codec.structure_numpy(rows), {k: v.numpy() for k, v in codec.structure(tensors).items()},
                 {k: v.numpy() for k, v in tf.function(codec.structure)(tensors).items()}):
        assert back["room"].dtype == np.int32 and back["image"].dtype == back["speed"].dtype == np.float32
        assert back["image"].shape == (6, 2, 2)
        for key in obs:
            np.testing.assert_array_equal(back[key], obs[key])
    specs = codec.specs()
    assert {k: (s.name, tuple(s.shape), s.dtype) for k, s in specs.items()} == {
        "image": ("image", (None, 2, 2), tf.float32), "room": ("room", (None,), tf.int32),
        "speed": ("speed", (None, 3), tf.float32)}
    tuple_codec = ObservationCodec.for_space(gym.spaces.Tuple(tuple(SPACE.spaces.values())))
    parts = tuple(obs.values())
    for row, back in zip(tuple_codec.rows(parts), rows, strict=True):
        np.testing.assert_array_equal(row, back)
    assert [s.name for s in tuple_codec.specs()] == ["observations_0", "observations_1", "observations_2"]


def test_a_segment_stores_an_image_in_one_byte_a_pixel_and_the_learner_sees_it_unchanged():
    """An [84, 84, 4] uint8 observation and a bool MultiBinary-like Box travel in their own arrays."""
    space = gym.spaces.Dict({"frames": gym.spaces.Box(0, 255, (84, 84, 4), np.uint8),
                             "flags": gym.spaces.Box(0, 1, (3,), bool), "speed": gym.spaces.Box(-1, 1, (2,))})
    codec = ObservationCodec.for_space(space)
    assert codec.groups == [np.float32, np.uint8] and codec.group_sizes == [2, 84 * 84 * 4 + 3]
    layout = SegmentLayout(codec.row_layout, (), np.int32)
    horizon, batch = 5, 2
    assert layout.nbytes(horizon, batch) == (horizon + 1) * batch * (4 * (2 + 1 + 4) + 84 * 84 * 4 + 3)
    segment = layout.empty(horizon, batch)
    obs = {"frames": np.random.default_rng(0).integers(0, 256, (batch, 84, 84, 4)).astype(np.uint8),
           "flags": np.array([[True, False, True], [False, False, True]]), "speed": np.ones((batch, 2), np.float32)}
    for view, row in zip(layout.observation_views(segment), codec.rows(obs), strict=True):
        view[:] = row
    unpacked = layout.unpack([tf.constant(array) for array in segment])
    back = codec.structure([tf.reshape(row, [(horizon + 1) * batch, -1]) for row in unpacked["observations"]])
    np.testing.assert_array_equal(back["frames"].numpy()[:batch], obs["frames"])
    np.testing.assert_array_equal(back["flags"].numpy()[-batch:], obs["flags"])
    assert back["flags"].dtype == tf.float32


def test_the_codec_of_a_box_is_a_reshape_and_names_wrong_inputs():
    codec = ObservationCodec.for_space(gym.spaces.Box(-1.0, 1.0, (2, 3), np.float32))
    obs = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    (row,) = codec.rows(obs)
    np.testing.assert_array_equal(row, obs.reshape(2, 6))
    np.testing.assert_array_equal(codec.structure_numpy([row]), obs)
    dict_codec = ObservationCodec.for_space(SPACE)
    with pytest.raises(ValueError, match=r"observations must be a dict with the keys \['image', 'room', 'speed'\]"):
        dict_codec.rows(np.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"observations\['speed'\] must have shape \[batch, 3\], got \(4, 2\)"):
        dict_codec.batch({**batch_of(4), "speed": np.zeros((4, 2), np.float32)})


def test_the_builder_makes_one_input_per_entry_and_check_network_accepts_it():
    network = keras_a3c.actor_critic_mlp(SPACE, gym.spaces.Discrete(3), (8,))
    assert sorted(network.input) == ["image", "room", "speed"]
    assert [layer.observation_key for layer in observation_normalizers(network)] == ["image", "speed"]
    keras_a3c.check_network(network, SPACE, gym.spaces.Discrete(3))
    codec = ObservationCodec.for_space(SPACE)
    params, value = network(codec.structure_numpy(codec.rows(batch_of(5))))
    assert params.shape == (5, 3) and value.shape == (5, 1)


@pytest.mark.parametrize("env_fn", [DictIdentityEnv, TupleIdentityEnv])
def test_a_dict_or_tuple_observation_learns_and_normalises_each_box_entry(env_fn):
    """The target is a Discrete entry (one-hot in the network); the other entry is N(5, 2) noise whose
    normalisation statistics must be learned from it alone."""
    keras.utils.set_random_seed(0)
    env = env_fn()
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (32,)))
    agent.compile(keras.optimizers.Adam(3e-3), gamma=0.0, n_steps=5)
    agent.fit(env_fn, total_steps=20_000, workers=2, envs_per_worker=8, verbose=0, seed=1)
    assert agent.train_trace_count == 1
    mean, _ = agent.evaluate(env_fn, episodes=20)
    assert mean >= 9.5  # uniform: 2.5, optimal: 10
    (layer,) = observation_normalizers(agent.network)
    assert layer.count.numpy() >= 20_000
    np.testing.assert_allclose(layer.mean.numpy(), 5.0, atol=0.15)
    np.testing.assert_allclose(layer.variance.numpy(), 4.0, rtol=0.1)


def dict_agent():
    keras.utils.set_random_seed(0)
    space = DictIdentityEnv().observation_space
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(space, gym.spaces.Discrete(4), (16,)))
    agent.compile(keras.optimizers.Adam(3e-3), gamma=0.0, n_steps=5)
    agent.fit(DictIdentityEnv, total_steps=3000, workers=2, envs_per_worker=4, verbose=0, seed=1)
    return agent


def dict_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"target": rng.integers(0, 4, n), "noise": rng.normal(5.0, 2.0, (n, 2, 3)).astype(np.float32)}


def test_predict_takes_one_dict_observation_or_a_batch_and_saves_and_loads(tmp_path):
    agent = dict_agent()
    obs = dict_batch()
    actions = agent.predict(obs)
    assert actions.shape == (8,)
    assert agent.predict({key: value[0] for key, value in obs.items()}) == actions[0]
    loaded = keras_a3c.load(agent.save(tmp_path / "agent"))
    np.testing.assert_array_equal(loaded.predict(obs), actions)
    assert observation_normalizers(loaded.network)[0].observation_key == "noise"


def test_the_exported_dict_policy_takes_one_named_input_per_entry(tmp_path):
    agent = dict_agent()
    obs = dict_batch()
    expected = agent.predict(obs)
    agent.export(str(tmp_path / "policy"))
    policy = tf.saved_model.load(str(tmp_path / "policy"))
    served = policy.serve({"target": tf.constant(obs["target"], tf.int32), "noise": tf.constant(obs["noise"])})
    np.testing.assert_array_equal(served, expected)
    result = serve_without_keras_a3c(tmp_path / "policy", obs)
    assert result["imported"] == ["tensorflow"] and result["inputs"] == ["noise", "target"]
    np.testing.assert_array_equal(result["actions"], expected)

    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    agent.export(str(tmp_path / "policy.onnx"), format="onnx")
    result = serve_without_keras_a3c(tmp_path / "policy.onnx", obs)
    assert result["imported"] == [] and result["inputs"] == ["noise", "target"]
    np.testing.assert_array_equal(result["actions"], expected)
