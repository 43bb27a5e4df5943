"""Environment plumbing: what a worker steps is a batch of envs (a gymnasium VectorEnv), and the
`ActionMaskFromInfo` wrapper for envs that give their action mask in `info`.

Vector envs use gymnasium's default next-step autoreset: the step after an episode
ends resets that sub-environment, ignores its action and returns reward 0. Such a
step is not a transition; the rollout marks it invalid and the losses mask it out.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from keras_a3c.distributions import for_action_space, mask_parts
from keras_a3c.observations import MASK_KEY, leaves_of

EnvSpec = str | Callable[[], gym.Env]


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """Raise a `ValueError` naming the space unless it is one keras_a3c supports."""
    leaves = dict(leaves_of(observation_space))  # raises for anything but a Box, or a Dict / Tuple of them
    if isinstance(observation_space, gym.spaces.Dict) and MASK_KEY in leaves:
        width = sum(mask_parts(action_space))  # raises for action spaces that cannot be masked
        if tuple(leaves[MASK_KEY].shape) != (width,):
            raise ValueError(f"the observation's {MASK_KEY!r} entry {leaves[MASK_KEY]} must have shape ({width},): "
                             f"one flag per action of {action_space}")
    for_action_space(action_space)  # raises for anything but Discrete and 1-D Box


def _env_factory(env: EnvSpec) -> Callable[[], gym.Env]:
    if isinstance(env, str):
        if env not in gym.registry:
            raise ValueError(f"unknown environment id {env!r}: it is not registered with gymnasium")
        return lambda: gym.make(env)
    if callable(env):
        return env
    raise TypeError(f"env must be a gymnasium id or a zero-argument env factory, got {type(env).__name__}")


def env_spaces(env: EnvSpec) -> tuple[gym.Space, gym.Space]:
    """(observation_space, action_space) of one env, checked; the env is closed again."""
    probe = _env_factory(env)()
    try:
        if not isinstance(probe, gym.Env):
            raise TypeError(f"the env factory must return a gymnasium.Env, got {type(probe).__name__}")
        check_spaces(probe.observation_space, probe.action_space)
        return probe.observation_space, probe.action_space
    finally:
        probe.close()


def make_vector_env(env: EnvSpec, num_envs: int, spaces: tuple[gym.Space, gym.Space] | None = None) -> VectorEnv:
    """`num_envs` copies of `env` stepped as one batch.

    A gymnasium id uses its own vectorised implementation where one exists (e.g. CartPole-v1's numpy
    one) and gives the spaces of `gym.make(id)`; a factory is called once per copy, so user wrappers apply.
    `spaces`, `env_spaces(env)` if the caller has it already, spares building one env to compare them.
    """
    vec = None
    if isinstance(env, str) and env in gym.registry and gym.registry[env].vector_entry_point is not None:
        vec = gym.make_vec(env, num_envs=num_envs, vectorization_mode="vector_entry_point")
        # Not every id's vector env batches what gym.make gives (ale-py's ALE/<Game>-v5 ones preprocess the
        # frames); keras_a3c trains on what gym.make gives.
        if (vec.single_observation_space, vec.single_action_space) != (spaces or env_spaces(env)):
            vec.close()
            vec = None
    if vec is None:
        vec = SyncVectorEnv([_env_factory(env)] * num_envs, autoreset_mode=AutoresetMode.NEXT_STEP)
    mode = vec.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode != AutoresetMode.NEXT_STEP:
        vec.close()
        raise ValueError(f"vector env {vec} uses autoreset mode {mode}; keras_a3c needs NEXT_STEP")
    return vec


def check_finite(name: str, values: np.ndarray, where: str) -> None:
    """Raise a `FloatingPointError` naming the first non-finite entry of `values`."""
    if not np.isfinite(values).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise FloatingPointError(f"{where}: {name} has a non-finite value {values[index]} at index {index}")


class ActionMaskFromInfo(gym.Wrapper):
    """Moves the invalid-action mask an env gives in `info["action_mask"]` (gymnasium's Taxi, ...) into
    its observation, where keras_a3c reads it (see `keras_a3c.observations.MASK_KEY`).

    The observation becomes a Dict {"observation": the env's observation, "action_mask": MultiBinary(A)}
    (A: one flag per action of a Discrete space, per logit of a MultiDiscrete one), or, when the env's
    observation is already a Dict, that Dict with an "action_mask" entry more. A reset or step whose info
    has no mask is a `ValueError`.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        mask_space = gym.spaces.MultiBinary(sum(mask_parts(env.action_space)))  # raises if nothing to mask
        inner = env.observation_space
        if isinstance(inner, gym.spaces.Dict):
            if MASK_KEY in inner.spaces:
                raise ValueError(f"the observation space {inner} already has an {MASK_KEY!r} entry")
            self.observation_space = gym.spaces.Dict({**inner.spaces, MASK_KEY: mask_space})
        else:
            self.observation_space = gym.spaces.Dict({"observation": inner, MASK_KEY: mask_space})
        self._width = mask_space.n

    def _observe(self, observation, info: dict, where: str) -> dict:
        if MASK_KEY not in info:
            raise ValueError(f"{self.env} gave no info[{MASK_KEY!r}] at {where}; ActionMaskFromInfo needs one at "
                             "every reset and step")
        mask = np.asarray(info[MASK_KEY]).astype(np.int8).reshape(-1)
        if mask.shape != (self._width,):
            raise ValueError(f"{self.env} gave an info[{MASK_KEY!r}] of shape {mask.shape} at {where}; "
                             f"{self.action_space} needs ({self._width},)")
        if isinstance(self.env.observation_space, gym.spaces.Dict):
            return {**observation, MASK_KEY: mask}
        return {"observation": observation, MASK_KEY: mask}

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        return self._observe(observation, info, "reset"), info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(observation, info, "a step"), reward, terminated, truncated, info
