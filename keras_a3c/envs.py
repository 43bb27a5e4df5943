"""Environment plumbing: what a worker steps is a batch of envs (a gymnasium VectorEnv).

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


def make_vector_env(env: EnvSpec, num_envs: int) -> VectorEnv:
    """`num_envs` copies of `env` stepped as one batch.

    A gymnasium id uses its numpy-vectorised implementation where one exists
    (e.g. CartPole-v1); a factory is called once per copy, so user wrappers apply.
    """
    if isinstance(env, str) and env in gym.registry and gym.registry[env].vector_entry_point is not None:
        vec = gym.make_vec(env, num_envs=num_envs, vectorization_mode="vector_entry_point")
    else:
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
