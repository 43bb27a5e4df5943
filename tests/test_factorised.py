"""Factorised policies (MultiDiscrete: one categorical per part; MultiBinary: one Bernoulli per bit)
learn the tiny identity tasks: every part of the action must follow the observation."""

import math

import keras
import numpy as np
import pytest
from envs import MultiBinaryIdentityEnv, MultiDiscreteIdentityEnv
from served import serve_without_keras_a3c

import keras_a3c


@pytest.mark.parametrize("env_fn, best, uniform_entropy", [
    (MultiDiscreteIdentityEnv, 30.0, math.log(3 * 2 * 4)), (MultiBinaryIdentityEnv, 50.0, 5 * math.log(2))])
def test_a_factorised_policy_learns_every_part_and_serves_its_actions_without_keras_a3c(env_fn, best,
                                                                                         uniform_entropy, tmp_path):
    """MultiDiscrete([3, 2, 4]) (uniform: 10 (1/3 + 1/2 + 1/4) ~ 10.8 an episode) and MultiBinary(5)
    (uniform: 25): the best policy earns 10 per part."""
    keras.utils.set_random_seed(0)
    env = env_fn()
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (32,)))
    agent.compile(keras.optimizers.Adam(3e-3), gamma=0.0, n_steps=5)
    before, _ = agent.evaluate(env_fn, episodes=20, deterministic=False)
    history = agent.fit(env_fn, total_steps=20_000, workers=2, envs_per_worker=8, verbose=0, seed=1)
    assert before < 0.6 * best
    assert agent.train_trace_count == 1
    greedy, _ = agent.evaluate(env_fn, episodes=20)
    sampled, _ = agent.evaluate(env_fn, episodes=20, deterministic=False)
    assert greedy >= 0.97 * best and sampled >= 0.9 * best
    # More certain than the uniform policy it started near (the logged entropy sums the parts').
    assert history.history["entropy"][-1] < 0.8 * uniform_entropy
    assert np.isfinite(history.history["loss"]).all()

    obs = np.stack([env_fn().reset(seed=seed)[0] for seed in range(16)])
    expected = agent.predict(obs)
    assert expected.shape == (16, *env.action_space.shape)
    agent.export(str(tmp_path / "policy"))
    np.testing.assert_array_equal(serve_without_keras_a3c(tmp_path / "policy", {"observations": obs})["actions"],
                                  expected)
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    agent.export(str(tmp_path / "policy.onnx"), format="onnx")
    np.testing.assert_array_equal(
        serve_without_keras_a3c(tmp_path / "policy.onnx", {"observations": obs})["actions"], expected)
