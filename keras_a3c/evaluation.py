"""Evaluate any policy: the returns of whole episodes, run a batch of envs at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from keras_a3c.envs import EnvSpec, make_vector_env

Policy = Callable[[np.ndarray], np.ndarray]


def evaluate_policy(policy: Policy | Callable[[Any, Any], tuple[np.ndarray, Any]], env: EnvSpec,
                    episodes: int = 100, num_envs: int = 16, seed: int = 10_000,
                    initial_state: Callable[[int], Any] | None = None) -> np.ndarray:
    """The returns of `episodes` episodes of `env` played by `policy`.

    Episodes run `num_envs` at a time; env i is reset with seed `seed + i` and runs a fixed
    share of the episodes, so short episodes are not over-counted. With `num_envs = episodes`
    episode i is the one episode of env i (seed `seed + i`).

    Args:
      policy: observations [num_envs, *obs_shape] float32 (a dict / tuple of such batches for a Dict /
        Tuple observation space) -> env actions [num_envs, ...]
        (an agent's greedy or sampling policy, an exported SavedModel's `serve`, ...); with
        `initial_state`, a recurrent policy (observations, state) -> (env actions, new state).
      env: a gymnasium id or a zero-argument env factory.
      episodes: how many episodes, >= 1.
      num_envs: envs stepped as one batch (at most `episodes` are made).
      seed: the seed of env 0.
      initial_state: for a recurrent policy, batch size -> the state that begins an episode (an array
        [batch, S], e.g. an exported policy's `initial_state`); each env's row of the state is reset to
        it when its episode begins.

    Returns:
      float64 [episodes], the undiscounted return of each episode in the order they ended.
    """
    if not (isinstance(episodes, (int, np.integer)) and episodes >= 1):
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    if not (isinstance(num_envs, (int, np.integer)) and num_envs >= 1):
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    num_envs = min(num_envs, episodes)
    targets = np.array([(episodes + i) // num_envs for i in range(num_envs)])
    vec = make_vector_env(env, num_envs)
    try:
        obs, _ = vec.reset(seed=seed)
        counts = np.zeros(num_envs, int)
        running = np.zeros(num_envs)
        reset_pending = np.zeros(num_envs, bool)  # NEXT_STEP autoreset: this step only resets these envs
        returns: list[float] = []
        start = None if initial_state is None else np.asarray(initial_state(num_envs), np.float32)
        state = start
        while (counts < targets).any():
            # Dict / Tuple observations go to the policy as they are, arrays as float32.
            batch = obs if isinstance(obs, (dict, tuple)) else np.asarray(obs, np.float32)
            if state is None:
                actions = policy(batch)
            else:
                actions, state = policy(batch, state)
                # The step that resets an env returns its next episode's first observation.
                state = np.where(reset_pending[:, None], start, np.asarray(state, np.float32))
            obs, reward, term, trunc, _ = vec.step(np.asarray(actions))
            running += np.where(reset_pending, 0.0, reward)
            reset_pending = term | trunc
            for i in np.flatnonzero(reset_pending):
                if counts[i] < targets[i]:
                    returns.append(float(running[i]))
                    counts[i] += 1
            running[reset_pending] = 0.0
    finally:
        vec.close()
    return np.array(returns)
