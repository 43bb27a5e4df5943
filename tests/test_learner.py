"""The learner: its decaying entropy bonus (the schedule, eagerly and under tf.function, and the update it weights),
the update compiled with XLA, and the importance weights that correct for policy lag."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from envs import ContinuousIdentityEnv, IdentityEnv

import keras_a3c
from keras_a3c.config import A3CConfig
from keras_a3c.distributions import Categorical
from keras_a3c.learner import UPDATE_LOGS, Learner
from keras_a3c.metrics import RunningMeans
from keras_a3c.observations import ObservationCodec
from keras_a3c.segment import SegmentLayout

SPEC = IdentityEnv()


def make_learner(config: A3CConfig, optimizer: keras.optimizers.Optimizer | None = None, seed: int = 0) -> Learner:
    keras.utils.set_random_seed(seed)
    network = keras_a3c.actor_critic_mlp(SPEC.observation_space, SPEC.action_space, (8,))
    return Learner(network, optimizer, config, RunningMeans(UPDATE_LOGS))


@pytest.mark.parametrize("compiled", [False, True])
def test_the_entropy_coef_decays_linearly_to_a_tenth_over_the_optimizers_updates_then_holds(compiled):
    optimizer = keras.optimizers.RMSprop(1e-3)
    learner = make_learner(A3CConfig(entropy_coef=0.02, entropy_decay_updates=100), optimizer)
    beta = tf.function(learner.entropy_coef) if compiled else learner.entropy_coef
    for updates, expected in [(0, 0.02), (50, 0.011), (100, 0.002), (10_000, 0.002)]:
        optimizer.iterations.assign(updates)
        assert float(beta()) == pytest.approx(expected, rel=1e-6)
    # A replica without an optimizer (a Ray actor's) decays with the count the learner sends it.
    replica = make_learner(A3CConfig(entropy_coef=0.02, entropy_decay_updates=100))
    assert float(replica.entropy_coef()) == pytest.approx(0.02)
    replica.set_updates(75)
    assert float(replica.entropy_coef()) == pytest.approx(0.0065)
    # Without a decay beta is the config's, whatever the count.
    constant = make_learner(A3CConfig(entropy_coef=0.02), optimizer)
    assert float(constant.entropy_coef()) == pytest.approx(0.02)


def test_the_update_is_weighted_by_the_decayed_entropy_coef():
    """After the decay, the gradient is the one of a constant beta of a tenth; before it, not."""
    rng = np.random.default_rng(0)
    horizon, batch = 5, 3
    segment = {
        "observations": tf.constant(np.eye(4, dtype=np.float32)[rng.integers(4, size=(horizon + 1, batch))]),
        "actions": tf.constant(rng.integers(4, size=(horizon, batch)), tf.int32),
        "rewards": tf.constant(rng.random((horizon, batch)), tf.float32),
        "terminated": tf.zeros((horizon, batch)),
        "truncated": tf.zeros((horizon, batch)),
        "valid": tf.ones((horizon, batch)),
    }
    optimizer = keras.optimizers.RMSprop(1e-3)
    decaying = make_learner(A3CConfig(n_steps=horizon, entropy_coef=0.5, entropy_decay_updates=10), optimizer)
    tenth = make_learner(A3CConfig(n_steps=horizon, entropy_coef=0.05))
    full = make_learner(A3CConfig(n_steps=horizon, entropy_coef=0.5))

    def gradients(learner):
        grads, _, _ = learner.gradients(segment, SPEC.action_space)
        return np.concatenate([g.numpy().reshape(-1) for g in grads])

    assert np.allclose(gradients(decaying), gradients(full), atol=1e-7)
    optimizer.iterations.assign(10)
    assert np.allclose(gradients(decaying), gradients(tenth), atol=1e-7)
    assert not np.allclose(gradients(tenth), gradients(full), atol=1e-4)


def test_fit_logs_the_decaying_entropy_coef_and_a_save_keeps_its_count(tmp_path):
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(SPEC.observation_space, SPEC.action_space, (8,)))
    agent.compile(keras.optimizers.RMSprop(1e-3), entropy_coef=0.01, entropy_decay_updates=200, n_steps=5)
    history = agent.fit(IdentityEnv, total_steps=4_000, workers=2, envs_per_worker=2, steps_per_epoch=1_000,
                        verbose=0, seed=0)
    betas = history.history["entropy_coef"]
    assert betas == sorted(betas, reverse=True) and betas[0] < 0.01
    updates = int(agent.optimizer.iterations)
    assert betas[-1] == pytest.approx(0.01 * (1 - 0.9 * min(updates / 200, 1)), rel=1e-5)
    loaded = keras_a3c.load(agent.save(tmp_path / "agent"))
    assert loaded.config.entropy_decay_updates == 200
    assert int(loaded.optimizer.iterations) == updates
    assert float(loaded.learner.entropy_coef()) == pytest.approx(float(agent.learner.entropy_coef()))


def test_the_update_compiled_with_xla_is_the_update():
    """Three updates on the same segments give the same weights and logs with and without XLA."""
    layout = SegmentLayout([(4, np.float32)], (), np.int64)
    codec = ObservationCodec.for_space(SPEC.observation_space)
    rng = np.random.default_rng(0)
    segments = []
    for _ in range(3):
        segment = layout.empty(5, 3)
        packed = segment[0]
        packed[:, :, layout.observation] = np.eye(4)[rng.integers(4, size=(6, 3))]
        packed[:-1, :, layout.action] = rng.integers(4, size=(5, 3, 1))
        packed[:-1, :, layout.reward] = rng.random((5, 3))
        packed[:-1, :, layout.valid] = 1.0
        segments.append(segment)
    results = []
    for jit_compile in (False, True):
        learner = make_learner(A3CConfig(n_steps=5, jit_compile=jit_compile), keras.optimizers.RMSprop(1e-2))
        learner.optimizer.build(learner.network.trainable_variables)
        train = learner.compile(layout, 3, SPEC.action_space, codec)
        weights = [train(segment) for segment in segments][-1]
        results.append((np.concatenate([w.reshape(-1) for w in weights]), learner.logs.result()["loss"]))
    (flat, loss), (flat_xla, loss_xla) = results
    np.testing.assert_allclose(flat_xla, flat, atol=1e-5)
    assert float(loss_xla) == pytest.approx(float(loss), rel=1e-4)
    initial = make_learner(A3CConfig()).network.get_weights()  # the same seed's weights before the updates
    assert not np.allclose(flat, np.concatenate([w.reshape(-1) for w in initial]), atol=1e-3)


def identity_segment(spec, horizon: int = 5, batch: int = 3, seed: int = 0) -> dict[str, tf.Tensor]:
    """A segment of random steps of `spec`'s spaces (no episode ends)."""
    rng = np.random.default_rng(seed)
    n = spec.observation_space.shape[0]
    observations = rng.normal(size=(horizon + 1, batch, n)).astype(np.float32)
    actions = np.stack([[spec.action_space.sample() for _ in range(batch)] for _ in range(horizon)])
    return {
        "observations": tf.constant(observations),
        "actions": tf.constant(actions),
        "rewards": tf.constant(rng.random((horizon, batch)), tf.float32),
        "terminated": tf.zeros((horizon, batch), tf.bool),
        "truncated": tf.zeros((horizon, batch), tf.bool),
        "valid": tf.ones((horizon, batch), tf.bool),
    }


@pytest.mark.parametrize("spec", [IdentityEnv(), ContinuousIdentityEnv(dim=2)], ids=["categorical", "gaussian"])
def test_importance_weights_of_one_leave_the_update_as_it_was(spec):
    """Behaviour params equal to the network's: pi / mu = 1, the corrected gradient is the paper's."""
    segment = identity_segment(spec)

    def gradients(config):
        keras.utils.set_random_seed(0)
        network = keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space, (8,))
        learner = Learner(network, None, config, RunningMeans(UPDATE_LOGS))
        params, _ = network(tf.reshape(segment["observations"][:-1], [15, -1]))
        grads, _, _ = learner.gradients({**segment, "behaviour_params": tf.reshape(params, [5, 3, -1])},
                                        spec.action_space)
        return np.concatenate([g.numpy().reshape(-1) for g in grads])

    np.testing.assert_allclose(gradients(A3CConfig(n_steps=5, importance_clip=1.0)),
                               gradients(A3CConfig(n_steps=5)), atol=1e-6)


def test_importance_weights_scale_each_steps_policy_term_by_pi_over_mu():
    """A behaviour policy that was sure of every action it took (mu(a_t|s_t) ~ 1): each step's policy-gradient
    term is weighted by rho_t = pi(a_t|s_t); the value and entropy terms are unchanged."""
    horizon, batch, n = 5, 3, 15
    segment = identity_segment(SPEC, horizon, batch)
    sure = 30.0 * tf.one_hot(segment["actions"], 4)
    logs = {}
    for clip in (None, 1.0):
        learner = make_learner(A3CConfig(n_steps=horizon, gae_lambda=1.0, importance_clip=clip))
        _, logs[clip], _ = learner.gradients({**segment, "behaviour_params": sure}, SPEC.action_space)
    params, values = learner.network(tf.reshape(segment["observations"], [(horizon + 1) * batch, -1]))
    values = tf.reshape(values, [horizon + 1, batch])
    returns = keras_a3c.losses.n_step_returns(segment["rewards"], segment["terminated"], segment["truncated"],
                                              values[1:], 0.99)
    advantages = tf.reshape(returns - values[:-1], [n])
    log_pi = Categorical(params[:n]).log_prob(tf.reshape(segment["actions"], [n]))
    assert float(logs[None]["policy_loss"]) == pytest.approx(float(tf.reduce_mean(-log_pi * advantages)), rel=1e-4)
    assert float(logs[1.0]["policy_loss"]) == pytest.approx(
        float(tf.reduce_mean(-log_pi * advantages * tf.exp(log_pi))), rel=1e-4)
    for name in ("value_loss", "entropy"):
        assert float(logs[1.0][name]) == pytest.approx(float(logs[None][name]), rel=1e-6)
