"""A3C.fit / evaluate / predict: behaviour, callbacks, threads and errors."""

import csv
import itertools
import threading
import time

import gymnasium as gym
import keras
import numpy as np
import pytest
from envs import IdentityEnv

import keras_a3c
import keras_a3c.learner
from keras_a3c.acting import numpy_forward, weights_of

LOG_KEYS = {"loss", "policy_loss", "value_loss", "entropy", "episode_return", "env_steps", "steps_per_second"}


def make_agent(env=None, hidden_units=(16,), lr=3e-3, **compile_kwargs):
    env = env or gym.make("CartPole-v1")
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, hidden_units))
    agent.compile(optimizer=keras.optimizers.Adam(lr), **compile_kwargs)
    return agent


def worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("a3c-worker")]


def test_fit_returns_history_and_keras_callbacks_work(tmp_path):
    agent = make_agent()
    csv_path = tmp_path / "log.csv"
    history = agent.fit(
        "CartPole-v1", total_steps=3000, workers=2, envs_per_worker=4, steps_per_epoch=1000, verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(csv_path))],
    )
    assert isinstance(history, keras.callbacks.History)
    assert LOG_KEYS <= set(history.history)
    assert history.history["env_steps"][-1] >= 3000
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["episode_return"][-1] > 0
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == len(history.epoch) >= 3
    assert LOG_KEYS <= set(rows[0])
    assert not worker_threads()


def test_all_workers_share_one_model_and_counters_are_exact():
    agent = make_agent()
    before = [w.numpy().copy() for w in agent.network.trainable_variables]
    agent.fit("CartPole-v1", total_steps=4000, workers=3, envs_per_worker=4, verbose=0)
    state = agent.training_state
    assert sum(state.worker_steps) == state.env_steps >= 4000
    assert all(steps > 0 for steps in state.worker_steps)
    # One optimizer: its step count is the number of segments all workers sent.
    assert int(agent.optimizer.iterations) == sum(state.worker_updates)
    assert all(updates > 0 for updates in state.worker_updates)
    after = agent.network.trainable_variables
    assert any(not np.allclose(b, a.numpy()) for b, a in zip(before, after, strict=True))


def test_one_history_row_per_epoch_of_env_steps():
    agent = make_agent()
    history = agent.fit("CartPole-v1", total_steps=3000, workers=2, envs_per_worker=4, steps_per_epoch=500, verbose=0)
    steps = agent.env_steps
    # The segments in flight when the budget was reached run past it; their steps belong to the last epoch.
    assert history.epoch == list(range(6))
    assert history.history["env_steps"][-1] == steps


def test_policy_lag_counts_the_updates_of_other_workers():
    agent = make_agent()
    history = agent.fit("CartPole-v1", total_steps=2000, workers=1, envs_per_worker=4, verbose=0)
    assert history.history["policy_lag"][-1] == 0.0  # a lone worker always acts on the latest parameters
    agent = make_agent()
    history = agent.fit("CartPole-v1", total_steps=6000, workers=3, envs_per_worker=4, verbose=0)
    lag = history.history["policy_lag"][-1]
    assert 0.5 < lag < 10.0  # about 2: the other two workers each update once per segment of this one
    assert agent.training_state.updates == int(agent.optimizer.iterations)


def test_train_function_traced_once_before_workers_start():
    agent = make_agent()
    agent.fit("CartPole-v1", total_steps=5000, workers=4, envs_per_worker=4, verbose=0)
    assert agent.train_trace_count == 1


def test_stop_training_stops_every_worker():
    class StopAtOnce(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model.stop_training = True

    agent = make_agent()
    start = time.perf_counter()
    history = agent.fit("CartPole-v1", total_steps=10_000_000, workers=4, envs_per_worker=4, verbose=0,
                        callbacks=[StopAtOnce()])
    assert time.perf_counter() - start < 10
    assert history.history["env_steps"][-1] < 10_000_000
    assert not worker_threads()


def test_early_stopping_on_episode_return():
    agent = make_agent(IdentityEnv())
    stopper = keras.callbacks.EarlyStopping(monitor="episode_return", mode="max", baseline=1e9, patience=2)
    history = agent.fit(IdentityEnv, total_steps=200_000, workers=2, envs_per_worker=4, steps_per_epoch=500,
                        verbose=0, callbacks=[stopper])
    # The return never reaches the baseline, so EarlyStopping ends the run after `patience` epochs.
    assert stopper.stopped_epoch > 0
    assert history.epoch == list(range(stopper.stopped_epoch + 1))
    assert history.history["env_steps"][-1] < 200_000


def test_stop_on_mean_return_callback():
    agent = make_agent(IdentityEnv())
    stopper = keras_a3c.StopOnMeanReturn(target=1.0, min_episodes=20)
    history = agent.fit(IdentityEnv, total_steps=1_000_000, workers=2, envs_per_worker=4, verbose=0,
                        callbacks=[stopper])
    assert stopper.stopped_at is not None and stopper.stopped_at["episode_return"] >= 1.0
    assert history.history["env_steps"][-1] < 1_000_000


def test_stop_on_mean_return_with_a_greedy_check_trains_on_while_the_greedy_policy_falls_short():
    agent = make_agent(IdentityEnv())
    updates_seen: list[tuple[int, int]] = []

    def unrewarding_env():
        # The greedy policy scores 0 here, so no check passes. Each step notes the update count, which must
        # not move while a check plays: the updates are paused.
        def reward(r):
            updates_seen.append((len(stopper.evaluations), int(agent.optimizer.iterations)))
            return 0.0

        return gym.wrappers.TransformReward(IdentityEnv(), reward)

    stopper = keras_a3c.StopOnMeanReturn(target=1.0, min_episodes=50, eval_env=unrewarding_env, eval_episodes=32)
    history = agent.fit(IdentityEnv, total_steps=30_000, workers=2, envs_per_worker=4, verbose=0,
                        callbacks=[stopper])
    assert stopper.stopped_at is None
    assert history.history["env_steps"][-1] >= 30_000
    assert len(stopper.evaluations) >= 2 and all(greedy == 0.0 for _, greedy in stopper.evaluations)
    # The next check waits for 50 more finished episodes (10 steps each; at most 8 were under way).
    steps = [step for step, _ in stopper.evaluations]
    assert all(later - earlier >= (50 - 8) * 10 for earlier, later in itertools.pairwise(steps))
    per_check = {check: {updates for c, updates in updates_seen if c == check} for check, _ in updates_seen}
    assert len(per_check) == len(stopper.evaluations)
    assert all(len(updates) == 1 for updates in per_check.values())
    assert len(set().union(*per_check.values())) > 1  # and between checks training went on


def test_stop_on_mean_return_with_a_greedy_check_stops_when_the_greedy_policy_reaches_the_target():
    agent = make_agent(IdentityEnv())
    stopper = keras_a3c.StopOnMeanReturn(target=1.0, min_episodes=20, eval_env=IdentityEnv, eval_episodes=8)
    history = agent.fit(IdentityEnv, total_steps=1_000_000, workers=2, envs_per_worker=4, verbose=0,
                        callbacks=[stopper])
    assert stopper.stopped_at is not None and stopper.stopped_at["greedy_return"] >= 1.0
    assert stopper.evaluations[-1][1] == stopper.stopped_at["greedy_return"]
    assert history.history["env_steps"][-1] < 1_000_000
    with pytest.raises(ValueError, match="eval_episodes"):
        keras_a3c.StopOnMeanReturn(target=1.0, eval_env=IdentityEnv, eval_episodes=0)
    five_actions = IdentityEnv()
    five_actions.action_space = gym.spaces.Discrete(5)
    with pytest.raises(ValueError, match="Discrete\\(5\\)"):
        agent.fit(IdentityEnv, total_steps=1000, workers=1, verbose=0,
                  callbacks=[keras_a3c.StopOnMeanReturn(1.0, eval_env=lambda: five_actions)])


def test_identity_env_learns_within_seconds():
    """A uniform policy scores 2.5 of 10; the agent must find the identity map.

    The stronger entropy bonus keeps a softmax that saturated early on a wrong action for
    one target from stalling there (with 0.01 about one run in three stalls at 7.45).
    """
    agent = make_agent(IdentityEnv(), hidden_units=(32,), lr=1e-2, entropy_coef=0.05)
    start = time.perf_counter()
    agent.fit(IdentityEnv, total_steps=30_000, workers=2, envs_per_worker=8, verbose=0, seed=1)
    mean, _ = agent.evaluate(IdentityEnv, episodes=20)
    assert time.perf_counter() - start < 60
    assert mean >= 9.5


def test_env_factory_is_called_per_env_copy_so_wrappers_apply():
    calls = []

    def factory():
        calls.append(1)
        return gym.wrappers.TransformReward(IdentityEnv(), lambda r: 10.0 * r)

    agent = make_agent(IdentityEnv())
    history = agent.fit(factory, total_steps=2000, workers=2, envs_per_worker=3, verbose=0)
    assert len(calls) == 1 + 2 * 3  # one probe for the spaces, then one per env copy
    assert history.history["episode_return"][-1] > 10  # uniform play scores 25 with the wrapper


class OwnVector(gym.vector.SyncVectorEnv):
    """A vector entry point's env: `num_envs` IdentityEnvs of `n` targets."""

    def __init__(self, num_envs: int, n: int = 4):
        super().__init__([lambda: IdentityEnv(n)] * num_envs)


gym.register("IdentityOwnVector-v0", entry_point=IdentityEnv, vector_entry_point=OwnVector)
gym.register("IdentityOtherVector-v0", entry_point=IdentityEnv,
             vector_entry_point=lambda num_envs: OwnVector(num_envs, n=6))


def test_an_ids_vector_env_is_used_only_where_it_batches_what_gym_make_gives(monkeypatch):
    own = keras_a3c.envs.make_vector_env("IdentityOwnVector-v0", 3)
    assert isinstance(own, OwnVector) and own.num_envs == 3
    # A vector entry point whose envs differ from gym.make's (as ale-py's ALE/<Game>-v5 preprocess the frames):
    # the workers step copies of what gym.make gives, the env the network was checked against.
    other = keras_a3c.envs.make_vector_env("IdentityOtherVector-v0", 3)
    assert not isinstance(other, OwnVector) and other.single_observation_space.shape == (4,)
    # Spaces the caller already has are what the id's vector env is compared with; no env is built to ask.
    probes = []
    original = keras_a3c.envs.env_spaces
    monkeypatch.setattr(keras_a3c.envs, "env_spaces", lambda env: probes.append(env) or original(env))
    four, six = IdentityEnv(4), IdentityEnv(6)
    assert isinstance(keras_a3c.envs.make_vector_env("IdentityOwnVector-v0", 3, (four.observation_space,
                                                                                 four.action_space)), OwnVector)
    assert not isinstance(keras_a3c.envs.make_vector_env("IdentityOwnVector-v0", 3, (six.observation_space,
                                                                                     six.action_space)), OwnVector)
    assert probes == []
    monkeypatch.undo()
    agent = make_agent(IdentityEnv())
    history = agent.fit("IdentityOtherVector-v0", total_steps=2000, workers=2, envs_per_worker=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_user_model_that_the_numpy_twin_does_not_know_trains():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(8, activation="tanh")(inputs)])  # not a chain
    model = keras.Model(inputs, [keras.layers.Dense(4)(x), keras.layers.Dense(1)(x)])
    assert numpy_forward(model) is None  # acts through TensorFlow instead
    agent = keras_a3c.A3C(model)
    agent.compile(optimizer="adam")
    history = agent.fit(IdentityEnv, total_steps=1000, workers=2, envs_per_worker=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert agent.predict(np.eye(4, dtype=np.float32)).shape == (4,)


def test_numpy_twin_of_a_user_network_with_layer_normalization_matches_keras():
    inputs = keras.Input((4,))
    x = keras.layers.LayerNormalization()(keras.layers.Dense(16, activation="relu")(inputs))
    x = keras.layers.LayerNormalization(center=False)(keras.layers.Dense(16, activation="elu")(x))
    model = keras.Model(inputs, [keras.layers.Dense(3)(x), keras.layers.Dense(1)(x)])
    for v in model.weights:  # scales and offsets away from 1 and 0
        v.assign(v + np.random.default_rng(0).normal(0.0, 0.3, v.shape).astype(np.float32))
    forward = numpy_forward(model)
    obs = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    logits, values, _ = forward(weights_of(model), obs)
    k_logits, k_values = model(obs)
    np.testing.assert_allclose(logits, k_logits, atol=1e-4)
    np.testing.assert_allclose(values, np.ravel(k_values), atol=1e-4)
    x = keras.layers.LayerNormalization(rms_scaling=True)(keras.layers.Dense(16)(inputs))
    rms = keras.Model(inputs, [keras.layers.Dense(3)(x), keras.layers.Dense(1)(x)])
    assert numpy_forward(rms) is None  # a variant the twin does not know: acts through TensorFlow


def test_numpy_twin_matches_keras_forward():
    env = gym.make("CartPole-v1")
    net = keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (32, 16), activation="relu")
    forward = numpy_forward(net)
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    logits, values, _ = forward(weights_of(net), obs)
    k_logits, k_values = net(obs)
    np.testing.assert_allclose(logits, k_logits, atol=1e-5)
    np.testing.assert_allclose(values, np.ravel(k_values), atol=1e-5)


def test_hogwild_updates_train():
    agent = make_agent(hogwild=True)
    history = agent.fit("CartPole-v1", total_steps=3000, workers=3, envs_per_worker=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_predict_and_evaluate():
    agent = make_agent(IdentityEnv())
    obs = np.eye(4, dtype=np.float32)
    logits, _ = agent.network(obs)
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True), np.argmax(logits, axis=1))
    assert agent.predict(obs[0]) == np.argmax(logits[0])
    sampled = agent.predict(np.repeat(obs[:1], 2000, axis=0), deterministic=False, seed=0)
    assert set(np.unique(sampled)) == {0, 1, 2, 3}  # near-uniform initial policy
    with pytest.raises(ValueError, match="shape"):
        agent.predict(np.zeros((2, 5), np.float32))
    mean, std = agent.evaluate(IdentityEnv, episodes=7)
    assert 0.0 <= mean <= 10.0 and std >= 0.0


def test_fit_before_compile_is_an_error():
    env = gym.make("CartPole-v1")
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space))
    with pytest.raises(RuntimeError, match="compile"):
        agent.fit("CartPole-v1", total_steps=100)


def test_episode_log_is_bounded_but_statistics_count_every_episode(monkeypatch):
    from keras_a3c import training_state

    monkeypatch.setattr(training_state, "EPISODE_LOG_LIMIT", 5)
    state = training_state.TrainingState()
    state.begin(num_workers=1, total_steps=10**9)
    for _ in range(4):
        state.add_steps(0, 3, np.array([1.0, 2.0]), np.array([1, 2]))
    assert state.episodes == 8 and state.env_steps == 12
    log = state.episode_log()
    assert len(log["return"]) == 6  # logging stops once the limit is reached (a step may finish several)
    assert list(log["env_steps"][:2]) == [3, 3] and state.snapshot()["episode_return"] == 1.5


def test_train_step_follows_the_keras_contract_so_train_on_batch_works():
    """train_step makes one update from a segment and returns the logs (Keras's contract)."""
    agent = make_agent(IdentityEnv(), n_steps=3)
    agent.action_space = gym.spaces.Discrete(4)
    T, B = 3, 2
    observations = np.tile(np.eye(4, dtype=np.float32)[[1, 2]], (T + 1, 1, 1))  # [T+1, B, 4]
    segment = {
        "observations": observations,
        "actions": np.array([[1, 2]] * T, np.int32),
        "rewards": np.ones((T, B), np.float32),
        "terminated": np.zeros((T, B), bool),
        "truncated": np.zeros((T, B), bool),
        "valid": np.ones((T, B), bool),
    }
    before = [w.numpy().copy() for w in agent.network.trainable_variables]
    logs = agent.train_on_batch(segment, return_dict=True)
    assert set(keras_a3c.learner.UPDATE_LOGS) <= set(logs) and np.isfinite(logs["loss"])
    assert int(agent.optimizer.iterations) == 1
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, agent.network.trainable_variables, strict=True))
    # The logs are those of the update: the value loss of V ~ 0 against n-step returns of reward 1.
    assert logs["value_loss"] > 0.5 and logs["entropy"] > 1.0


def test_evaluate_policy_plays_any_policy_and_counts_each_episode_once():
    perfect = keras_a3c.evaluate_policy(lambda obs: np.argmax(obs, axis=1), IdentityEnv, episodes=7, num_envs=3)
    assert perfect.shape == (7,) and (perfect == 10.0).all()
    wrong = keras_a3c.evaluate_policy(lambda obs: (np.argmax(obs, axis=1) + 1) % 4, IdentityEnv, episodes=5)
    assert (wrong == 0.0).all()
    with pytest.raises(ValueError, match="episodes"):
        keras_a3c.evaluate_policy(lambda obs: obs, IdentityEnv, episodes=0)


def test_env_steps_is_the_agents_global_step_count():
    agent = make_agent()
    assert agent.env_steps == 0
    agent.fit("CartPole-v1", total_steps=1000, workers=2, envs_per_worker=4, verbose=0)
    first = agent.env_steps
    assert first >= 1000 and first == agent.training_state.env_steps
    agent.fit("CartPole-v1", total_steps=1000, workers=2, envs_per_worker=4, verbose=0)
    assert agent.env_steps >= first + 1000
