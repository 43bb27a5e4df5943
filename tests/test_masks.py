"""Invalid-action masks: the `action_mask` entry of a Dict observation (PettingZoo's convention), or an
`info["action_mask"]` moved there by `ActionMaskFromInfo` (gymnasium's Taxi), keeps the actions it forbids
from being sampled, in training, `predict`, `evaluate` and the exported policy, and from the learner's
log-probabilities and entropy."""

import math

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf
from envs import IdentityEnv, InfoMaskedIdentityEnv, MaskedIdentityEnv, ObservationSpaceEnv
from served import serve_without_keras_a3c

import keras_a3c
from keras_a3c.distributions import Categorical, MultiCategorical, masked_params


def test_masked_logits_give_finite_log_probs_and_entropy_and_no_gradient_to_masked_actions():
    logits = tf.Variable([[0.0, math.log(3.0), 50.0], [1.0, 2.0, 3.0]])
    mask = tf.constant([[1, 1, 0], [0, 0, 1]])
    with tf.GradientTape() as tape:
        pi = Categorical(masked_params(logits, mask))
        log_prob, entropy = pi.log_prob(tf.constant([1, 2])), pi.entropy()
        loss = tf.reduce_sum(log_prob) + tf.reduce_sum(entropy)
    np.testing.assert_allclose(log_prob, [math.log(0.75), 0.0], atol=1e-6)  # renormalised over the valid ones
    np.testing.assert_allclose(entropy, [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), 0.0], atol=1e-6)
    grad = tape.gradient(loss, logits).numpy()
    assert np.isfinite(grad).all() and grad[0, 2] == 0.0 and (grad[1, :2] == 0.0).all()
    samples = Categorical(masked_params(logits, mask)).sample(tf.constant([1, 2], tf.int64)).numpy()
    assert samples[1] == 2 and samples[0] in (0, 1)
    parts = MultiCategorical(masked_params(tf.zeros([1, 5]), tf.constant([[0, 1, 1, 0, 1]])), (2, 3))
    np.testing.assert_allclose(parts.log_prob(tf.constant([[1, 2]])), [math.log(0.5)], atol=1e-6)
    assert np.isfinite(parts.entropy()).all()


def masked_agent(env_fn=MaskedIdentityEnv):
    keras.utils.set_random_seed(0)
    env = env_fn()
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (32,)))
    agent.compile(keras.optimizers.Adam(3e-3), gamma=0.0, n_steps=5)
    return agent


def test_a_masked_task_learns_and_never_takes_an_invalid_action(tmp_path):
    agent = masked_agent()
    MaskedIdentityEnv.invalid_actions = 0
    agent.fit(MaskedIdentityEnv, total_steps=20_000, workers=2, envs_per_worker=8, verbose=0, seed=1)
    greedy, _ = agent.evaluate(MaskedIdentityEnv, episodes=20)
    sampled, _ = agent.evaluate(MaskedIdentityEnv, episodes=20, deterministic=False)
    assert MaskedIdentityEnv.invalid_actions == 0
    assert greedy >= 9.5 and sampled >= 8.0  # uniform over the valid actions: 3.3

    # predict and the exported policy take the mask from the observation and never break it.
    rng = np.random.default_rng(0)
    mask = np.zeros((64, 6), np.int8)
    for row in mask:
        row[rng.choice(6, 2, replace=False)] = 1
    obs = {"target": rng.integers(0, 6, 64), "action_mask": mask}
    for actions in (agent.predict(obs), agent.predict(obs, deterministic=False, seed=3)):
        assert mask[np.arange(64), actions].all()
    agent.export(str(tmp_path / "policy"))
    policy = tf.saved_model.load(str(tmp_path / "policy"))
    served = policy.serve({"target": tf.constant(obs["target"], tf.int32),
                           "action_mask": tf.constant(mask, tf.float32)}).numpy()
    np.testing.assert_array_equal(served, agent.predict(obs))
    sampled = policy.sample({"target": tf.constant(obs["target"], tf.int32),
                             "action_mask": tf.constant(mask, tf.float32)}, tf.constant(5, tf.int64)).numpy()
    assert mask[np.arange(64), sampled].all()

    np.testing.assert_array_equal(serve_without_keras_a3c(tmp_path / "policy", obs)["actions"], served)
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    agent.export(str(tmp_path / "policy.onnx"), format="onnx")
    np.testing.assert_array_equal(serve_without_keras_a3c(tmp_path / "policy.onnx", obs)["actions"], served)


def info_masked():
    return keras_a3c.ActionMaskFromInfo(InfoMaskedIdentityEnv())


def test_a_mask_given_in_info_is_moved_into_the_observation_and_learns():
    assert info_masked().observation_space == gym.spaces.Dict(
        {"observation": gym.spaces.Discrete(6), "action_mask": gym.spaces.MultiBinary(6)})
    agent = masked_agent(info_masked)
    MaskedIdentityEnv.invalid_actions = 0
    agent.fit(info_masked, total_steps=20_000, workers=2, envs_per_worker=8, verbose=0, seed=1)
    greedy, _ = agent.evaluate(info_masked, episodes=20)
    assert MaskedIdentityEnv.invalid_actions == 0 and greedy >= 9.5


def test_action_mask_from_info_on_taxi_keeps_a_dict_observation_and_names_what_is_missing():
    taxi = keras_a3c.ActionMaskFromInfo(gym.make("Taxi-v4"))
    observation, info = taxi.reset(seed=0)
    assert taxi.observation_space["observation"] == gym.spaces.Discrete(500)
    np.testing.assert_array_equal(observation["action_mask"], info["action_mask"])
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(taxi.observation_space, taxi.action_space, (16,)))
    agent.compile()
    agent.fit(lambda: keras_a3c.ActionMaskFromInfo(gym.make("Taxi-v4")), total_steps=1000, workers=2,
              envs_per_worker=2, verbose=0)
    for seed in range(5):  # one observation in, one action out, always an allowed one
        assert observation["action_mask"][agent.predict(observation, deterministic=False, seed=seed)]
    dict_env = ObservationSpaceEnv(gym.spaces.Dict({"x": gym.spaces.Box(0, 1, (2,))}))
    assert sorted(keras_a3c.ActionMaskFromInfo(dict_env).observation_space) == ["action_mask", "x"]
    with pytest.raises(ValueError, match=r"gave no info\['action_mask'\] at reset"):
        keras_a3c.ActionMaskFromInfo(IdentityEnv()).reset()
    box_actions = IdentityEnv()
    box_actions.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    with pytest.raises(ValueError, match="an action mask needs a Discrete or MultiDiscrete action space"):
        keras_a3c.ActionMaskFromInfo(box_actions)


def test_a_mask_with_no_valid_action_is_a_clear_error():
    agent = masked_agent()
    obs = {"target": np.array([0, 1]), "action_mask": np.array([[1, 0, 0, 0, 0, 0], [0] * 6], np.int8)}
    with pytest.raises(ValueError, match=r"predict: the action mask of env 1 leaves no valid action"):
        agent.predict(obs)


class EmptyMaskEnv(MaskedIdentityEnv):
    def _observe(self):
        observation = super()._observe()
        if self.t >= 3:
            observation["action_mask"][:] = 0
        return observation


def test_an_env_whose_mask_leaves_no_action_stops_fit_with_a_clear_error():
    agent = masked_agent()
    with pytest.raises(ValueError, match=r"worker \d+.*the action mask of env \d+ leaves no valid action"):
        agent.fit(EmptyMaskEnv, total_steps=5000, workers=2, envs_per_worker=2, verbose=0)


@pytest.mark.parametrize("space, action_space, message", [
    (gym.spaces.Dict({"x": gym.spaces.Box(0, 1, (2,)), "action_mask": gym.spaces.Box(0, 1, (5,), np.int8)}),
     gym.spaces.Discrete(4), r"'action_mask' entry Box\(0, 1, \(5,\), int8\) must have shape \(4,\)"),
    (gym.spaces.Dict({"x": gym.spaces.Box(0, 1, (2,)), "action_mask": gym.spaces.Box(0, 1, (2,), np.int8)}),
     gym.spaces.Box(-1.0, 1.0, (2,), np.float32), "an action mask needs a Discrete or MultiDiscrete action space"),
])
def test_a_mask_that_does_not_fit_the_action_space_is_rejected_before_any_thread_starts(space, action_space,
                                                                                        message):
    env = ObservationSpaceEnv(space)
    env.action_space = action_space
    with pytest.raises(ValueError, match=message):
        keras_a3c.actor_critic_mlp(space, action_space)
