"""Recurrent policies (A3C LSTM): the state is carried per env and zeroed exactly where an episode begins,
the learner replays each segment from the state its first step was taken with, a policy with memory learns
what a feedforward one cannot, and the exported policy carries its state as `predict` does."""

import threading

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf
from envs import CueEnv, IdentityEnv, ImageIdentityEnv
from recording import record_segments
from served import serve_without_keras_a3c, tflite_interpreter

import keras_a3c
from keras_a3c.acting import numpy_forward, weights_of
from keras_a3c.observations import ObservationCodec
from keras_a3c.recurrent import state_sizes

CUE = CueEnv()


def recurrent_agent(env=CUE, seed=0, **builder) -> keras_a3c.A3C:
    keras.utils.set_random_seed(seed)
    builder = {"lstm_units": 16, **builder}
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, **builder))
    agent.compile(keras.optimizers.Adam(3e-3), n_steps=8, entropy_coef=0.01)
    return agent


def test_the_builders_make_the_step_function_the_contract_describes():
    net = keras_a3c.actor_critic_mlp(CUE.observation_space, CUE.action_space, lstm_units=16)
    assert state_sizes(net) == (16, 16)
    params, value, h, c = net([np.zeros((3, 2), np.float32), np.zeros((3, 16)), np.zeros((3, 16))])
    assert params.shape == (3, 2) and value.shape == (3, 1) and h.shape == c.shape == (3, 16)
    assert state_sizes(keras_a3c.actor_critic_mlp(CUE.observation_space, CUE.action_space)) == ()
    gru = keras_a3c.actor_critic_mlp(CUE.observation_space, CUE.action_space, cell=keras.layers.GRUCell(8))
    assert state_sizes(gru) == (8,)
    cnn = keras_a3c.actor_critic_cnn(ImageIdentityEnv(np.uint8).observation_space, gym.spaces.Discrete(4), "minatar",
                                     lstm_units=32)
    assert state_sizes(cnn) == (32, 32)
    with pytest.raises(ValueError, match="lstm_units or cell, not both"):
        keras_a3c.actor_critic_mlp(CUE.observation_space, CUE.action_space, lstm_units=4, cell=keras.layers.GRUCell(4))
    with pytest.raises(ValueError, match="lstm_units must be an integer >= 0"):
        keras_a3c.actor_critic_mlp(CUE.observation_space, CUE.action_space, lstm_units=-1)


def test_the_numpy_twin_of_an_lstm_matches_keras_step_by_step():
    for net in (keras_a3c.actor_critic_mlp(CUE.observation_space, CUE.action_space, lstm_units=16),
                keras_a3c.actor_critic_cnn(ImageIdentityEnv(np.uint8).observation_space, gym.spaces.Discrete(4),
                                           "minatar", lstm_units=8)):
        forward = numpy_forward(net)
        assert forward is not None
        rng = np.random.default_rng(1)
        shape = net.inputs[0].shape[1:]
        state = [np.zeros((5, size), np.float32) for size in state_sizes(net)]
        keras_state = list(state)
        for _ in range(4):
            obs = rng.integers(0, 256, (5, *shape)).astype(np.float32)
            params, values, state = forward(weights_of(net), obs, state)
            keras_params, keras_values, *keras_state = net([obs, *keras_state])
            keras_state = [np.asarray(part) for part in keras_state]
            np.testing.assert_allclose(params, keras_params, atol=1e-4)
            np.testing.assert_allclose(values, np.ravel(keras_values), atol=1e-4)
            for ours, theirs in zip(state, keras_state, strict=True):
                np.testing.assert_allclose(ours, theirs, atol=1e-4)
    gru = keras_a3c.actor_critic_mlp(CUE.observation_space, CUE.action_space, cell=keras.layers.GRUCell(8))
    assert numpy_forward(gru) is None  # acts through one compiled call instead


def test_the_state_is_zeroed_exactly_where_episodes_begin_and_the_learner_replays_what_the_worker_saw(monkeypatch):
    """Episodes of 3 steps in segments of 5: each segment's stored initial state, and the learner's replay
    of it, must equal the network run from a zero state at each episode's first observation (global rows
    0, 4, 8, ...: 3 steps, then the final observation whose step resets the env)."""
    env = CueEnv(episode_length=3)
    keras.utils.set_random_seed(0)
    network = keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, lstm_units=4,
                                         normalize_observations=False)
    agent = keras_a3c.A3C(network)
    agent.compile(keras.optimizers.SGD(0.0), n_steps=5)  # the weights stay as they are
    segments = record_segments(monkeypatch)
    agent.fit(lambda: CueEnv(episode_length=3), total_steps=60, workers=1, envs_per_worker=2, verbose=0, seed=3)
    assert len(segments) >= 4 and agent.train_trace_count == 1
    packed = np.concatenate([segment[0][:5] for segment in segments])  # [global rows, B, F]
    assert packed.shape[-1] == 2 + 1 + 4  # observation, action, reward, terminated, truncated, valid
    observations = packed[..., :2]
    valid = packed[..., -1] > 0.5
    rows = len(packed)
    np.testing.assert_array_equal(valid, np.broadcast_to((np.arange(rows) % 4 != 3)[:, None], valid.shape))

    # The oracle: the Keras network over each env's observations, from zeros at rows 0, 4, 8, ...
    states, params = [], []
    state = [np.zeros((2, 4), np.float32)] * 2
    for row in range(rows + 1):
        if row % 4 == 0:
            state = [np.zeros((2, 4), np.float32)] * 2
        states.append(np.concatenate(state, axis=1))
        obs = observations[row] if row < rows else segments[-1][0][5, :, :2]
        p, _, *state = network([obs, *state])
        state = [np.asarray(part) for part in state]
        params.append(np.asarray(p))
    codec = ObservationCodec.for_space(env.observation_space, network)
    for k, segment in enumerate(segments):
        np.testing.assert_allclose(segment[-1], states[5 * k], atol=1e-5)  # the state of its first step
        unpacked = {"observations": [tf.constant(segment[0][:, :, :2])],
                    "initial_state": tf.split(tf.constant(segment[-1]), [4, 4], axis=1),
                    "valid": tf.constant(segment[0][:5, :, -1] > 0.5)}
        replayed, _ = agent.learner._replay(unpacked["observations"], unpacked["initial_state"], unpacked["valid"],
                                            codec)
        # Rows 0..5, the bootstrap row with the state after the segment's last step.
        np.testing.assert_allclose(np.asarray(replayed), np.concatenate(params[5 * k:5 * k + 6]), atol=1e-5)


def test_a_policy_that_remembers_solves_the_cue_task_and_one_that_forgets_cannot():
    remembers = recurrent_agent()
    remembers.fit(CueEnv, total_steps=24_000, workers=2, envs_per_worker=8, verbose=0, seed=0)
    assert remembers.train_trace_count == 1
    mean, _ = remembers.evaluate(CueEnv, episodes=40)
    assert mean >= 3.9, mean  # of 4; remembering the cue
    forgets = recurrent_agent(lstm_units=0)
    forgets.fit(CueEnv, total_steps=24_000, workers=2, envs_per_worker=8, verbose=0, seed=0)
    forgets_mean, _ = forgets.evaluate(CueEnv, episodes=40)
    assert forgets_mean <= 3.0, forgets_mean  # 1 + 3 / 2 = 2.5 in expectation


def test_predict_carries_the_state_and_episode_start_resets_it():
    agent = recurrent_agent()
    obs = np.eye(2, dtype=np.float32)
    actions, state = agent.predict(obs)
    assert actions.shape == (2,) and state.shape == (2, 32)
    _, again = agent.predict(obs, state=state)
    assert not np.allclose(again, state)
    _, fresh = agent.predict(obs, state=state, episode_start=np.array([True, False]))
    np.testing.assert_allclose(fresh[0], state[0], atol=1e-6)  # row 0 began again from zeros
    np.testing.assert_allclose(fresh[1], again[1], atol=1e-6)
    np.testing.assert_array_equal(agent.initial_state(3), np.zeros((3, 32)))
    one_action, one_state = agent.predict(obs[0])
    assert np.ndim(one_action) == 0 and one_state.shape == (32,)
    with pytest.raises(ValueError, match=r"recurrent state must have shape \[batch, 32\]"):
        agent.predict(obs, state=np.zeros((2, 7)))
    feedforward = keras_a3c.A3C(keras_a3c.actor_critic_mlp(CUE.observation_space, CUE.action_space))
    with pytest.raises(ValueError, match="this network is feedforward"):
        feedforward.predict(obs, state=state)


def test_the_exported_policy_carries_its_state_as_predict_does(tmp_path):
    agent = recurrent_agent()
    agent.fit(CueEnv, total_steps=2_000, workers=1, envs_per_worker=4, verbose=0, seed=0)
    agent.export(tmp_path / "policy")
    policy = tf.saved_model.load(str(tmp_path / "policy"))
    state = policy.initial_state(tf.constant(3, tf.int32))
    ours = agent.initial_state(3)
    np.testing.assert_array_equal(state, ours)
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs = rng.random((3, 2)).astype(np.float32)
        actions, state = policy.serve(tf.constant(obs), state)
        expected, ours = agent.predict(obs, state=ours)
        np.testing.assert_array_equal(actions, expected)
        np.testing.assert_allclose(state, ours, atol=1e-5)
        logits, after = policy.action_distribution(tf.constant(obs), state)
        assert logits.shape == (3, 2) and after.shape == (3, 32)
        value, _ = policy.value(tf.constant(obs), state)
        assert value.shape == (3,)
        sampled, _ = policy.sample(tf.constant(obs), state, tf.constant(1, tf.int64))
        assert sampled.shape == (3,)
    served = policy.signatures["serve"](observations=tf.constant(obs), state=tf.constant(ours))
    assert set(served) == {"actions", "state"}
    result = serve_without_keras_a3c(tmp_path / "policy", {"observations": obs, "state": ours})
    assert result["imported"] == ["tensorflow"]
    expected, new_state = agent.predict(obs, state=ours)
    np.testing.assert_array_equal(result["actions"], expected)
    np.testing.assert_allclose(result["state"], new_state, atol=1e-5)
    # The greedy policy played through the export scores what the agent's evaluation does.
    exported = keras_a3c.evaluate_policy(lambda o, s: policy.serve(tf.constant(o), tf.constant(s)), CueEnv,
                                         episodes=10, initial_state=lambda n: policy.initial_state(n))
    np.testing.assert_allclose(exported.mean(), agent.evaluate(CueEnv, episodes=10, seed=10_000)[0])


def test_a_recurrent_agent_saves_loads_and_trains_on(tmp_path):
    agent = recurrent_agent()
    agent.fit(CueEnv, total_steps=1_000, workers=2, envs_per_worker=2, verbose=0, seed=0)
    agent.save(tmp_path / "agent")
    loaded = keras_a3c.load(tmp_path / "agent")
    obs = np.eye(2, dtype=np.float32)
    for ours, theirs in zip(agent.predict(obs), loaded.predict(obs), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    loaded.fit(CueEnv, total_steps=500, workers=2, envs_per_worker=2, verbose=0)
    assert loaded.env_steps >= 1_500 and loaded.train_trace_count == 1


def test_any_keras_cell_trains_through_the_compiled_call_and_a_cnn_lstm_through_the_twin():
    gru = recurrent_agent(lstm_units=0, cell=keras.layers.GRUCell(8))
    gru.fit(CueEnv, total_steps=600, workers=2, envs_per_worker=2, verbose=0, seed=0)
    assert gru.train_trace_count == 1
    actions, state = gru.predict(np.eye(2, dtype=np.float32))
    assert state.shape == (2, 8)
    image = ImageIdentityEnv(np.uint8)
    cnn = keras_a3c.A3C(keras_a3c.actor_critic_cnn(image.observation_space, image.action_space, "minatar",
                                                   lstm_units=8))
    cnn.compile(n_steps=4)
    cnn.fit(lambda: ImageIdentityEnv(np.uint8), total_steps=300, workers=2, envs_per_worker=2, verbose=0, seed=0)
    assert cnn.train_trace_count == 1 and cnn.env_steps >= 300


def test_a_network_whose_state_does_not_fit_or_a_stateful_layer_is_refused_before_any_thread_starts():
    obs = keras.Input((4,))
    h = keras.Input((8,))
    x = keras.layers.Dense(8)(keras.layers.Concatenate()([obs, h]))
    wrong = keras.Model([obs, h], [keras.layers.Dense(2)(x), keras.layers.Dense(1)(x), keras.layers.Dense(4)(x)])
    threads = threading.active_count()
    agent = keras_a3c.A3C(wrong)
    agent.compile()
    with pytest.raises(ValueError, match=r"state 0 goes in with shape \(None, 8\) and comes out with shape \(None, 4"):
        agent.fit(IdentityEnv, total_steps=100, workers=2, verbose=0)
    inputs = keras.Input(batch_shape=(2, 4))
    x = keras.layers.LSTM(8, stateful=True)(keras.layers.Reshape((1, 4))(inputs))
    stateful = keras.Model(inputs, [keras.layers.Dense(4)(x), keras.layers.Dense(1)(x)])
    agent = keras_a3c.A3C(stateful)
    agent.compile()
    with pytest.raises(ValueError, match="stateful=True"):
        agent.fit(IdentityEnv, total_steps=100, workers=2, verbose=0)
    assert threading.active_count() == threads


def test_tflite_and_onnx_exports_carry_the_state_too(tmp_path):
    agent = recurrent_agent()
    obs, state = np.random.default_rng(0).random((1, 2)).astype(np.float32), np.full((1, 32), 0.1, np.float32)
    expected, new_state = agent.predict(obs, state=state)
    agent.export(str(tmp_path / "policy.tflite"), format="tflite")
    runner = tflite_interpreter(str(tmp_path / "policy.tflite")).get_signature_runner("serve")
    served = runner(observations=obs, state=state)
    np.testing.assert_array_equal(served["actions"], expected)
    np.testing.assert_allclose(served["state"], new_state, atol=1e-5)
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    agent.export(str(tmp_path / "policy.onnx"), format="onnx")
    result = serve_without_keras_a3c(tmp_path / "policy.onnx", {"observations": obs, "state": state})
    assert result["imported"] == [] and result["inputs"] == ["observations", "state"]
    np.testing.assert_array_equal(result["actions"], expected)
    np.testing.assert_allclose(result["state"], new_state, atol=1e-5)
