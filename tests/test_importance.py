"""The correction for policy lag (`A3CConfig.importance_clip`) in whole runs: the workers store the params
they sampled each action from, and every policy family learns its identity task with them (a save keeps the
setting: test_saving.py). The weights themselves are checked by hand in test_losses.py and test_learner.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from envs import ContinuousIdentityEnv, CueEnv, IdentityEnv, MaskedIdentityEnv, MultiDiscreteIdentityEnv
from recording import record_segments

import keras_a3c
from keras_a3c.acting import ActionSampler
from keras_a3c.observations import ObservationCodec


def corrected_agent(env, lr: float = 3e-3, optimizer=None, **builder) -> keras_a3c.A3C:
    keras.utils.set_random_seed(0)
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (32,), **builder))
    agent.compile(optimizer or keras.optimizers.Adam(lr), n_steps=5, gamma=0.0, importance_clip=1.0)
    return agent


@pytest.mark.parametrize("env_fn, builder", [(IdentityEnv, {}), (ContinuousIdentityEnv, {}),
                                             (CueEnv, {"lstm_units": 4})], ids=["categorical", "gaussian", "recurrent"])
def test_a_segment_holds_the_params_each_action_was_sampled_from(env_fn, builder, monkeypatch):
    """With the weights held still (SGD at 0), the behaviour params a worker stored are the network's params
    at each step's observation (for a recurrent network: what the learner's replay of the segment gives)."""
    env = env_fn()
    agent = corrected_agent(env, optimizer=keras.optimizers.SGD(0.0), normalize_observations=False, **builder)
    segments = record_segments(monkeypatch)
    agent.fit(env_fn, total_steps=60, workers=1, envs_per_worker=2, verbose=0, seed=3)
    assert len(segments) >= 4
    codec = ObservationCodec.for_space(env.observation_space, agent.network)
    layout = agent.learner.segment_layout(codec, ActionSampler(env.action_space))
    assert layout.params_size == ActionSampler(env.action_space).num_params >= 2
    for segment in segments:
        unpacked = layout.unpack([tf.constant(part) for part in segment])
        stored = unpacked["behaviour_params"].numpy()  # [5, 2, P]
        if builder:
            params, _ = agent.learner._replay(unpacked["observations"], unpacked["initial_state"],
                                              unpacked["valid"], codec)
            params = np.asarray(params)[:10]
        else:
            params, _ = agent.network(tf.reshape(unpacked["observations"][0][:5], [10, -1]))
        np.testing.assert_allclose(stored.reshape(10, -1), np.asarray(params), atol=1e-5)


# Each task's greedy bar (its best is 10 an episode per action part, 0 for the Gaussian one; uniform play
# earns 2.5, about 10.8, 3.3 and about -2.1).
BARS = {IdentityEnv: 9.5, MultiDiscreteIdentityEnv: 27.0, MaskedIdentityEnv: 9.5, ContinuousIdentityEnv: -0.5}


@pytest.mark.parametrize("env_fn", list(BARS), ids=["categorical", "multidiscrete", "masked", "gaussian"])
def test_every_policy_family_learns_with_the_correction(env_fn):
    """Each family's tiny identity task, with 4 workers (so the acting policy lags the shared one)."""
    agent = corrected_agent(env_fn())
    history = agent.fit(env_fn, total_steps=20_000, workers=4, envs_per_worker=8, verbose=0, seed=1)
    assert np.isfinite(history.history["loss"]).all() and agent.train_trace_count == 1
    greedy, _ = agent.evaluate(env_fn, episodes=20)
    assert greedy >= BARS[env_fn], greedy
