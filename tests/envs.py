"""Tiny environments for fast behaviour tests."""

import gymnasium as gym
import numpy as np


class IdentityEnv(gym.Env):
    """Observe a one-hot target in {0..n-1}; reward 1 for choosing it. 10 steps an episode.

    A uniform policy earns 10/n per episode, the optimal one 10.
    """

    def __init__(self, n: int = 4, episode_length: int = 10):
        self.n, self.episode_length = n, episode_length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (n,), np.float32)
        self.action_space = gym.spaces.Discrete(n)

    def _observe(self):
        self.target = int(self.np_random.integers(self.n))
        return np.eye(self.n, dtype=np.float32)[self.target]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observe(), {}

    def step(self, action):
        reward = float(action == self.target)
        self.t += 1
        return self._observe(), reward, False, self.t >= self.episode_length, {}


class FaultyEnv(IdentityEnv):
    """An IdentityEnv that fails after `fail_after` steps: raises, or returns NaN."""

    def __init__(self, fail_after: int = 50, mode: str = "raise"):
        super().__init__()
        self.fail_after, self.mode, self.steps = fail_after, mode, 0

    def step(self, action):
        self.steps += 1
        obs, reward, terminated, truncated, info = super().step(action)
        if self.steps >= self.fail_after:
            if self.mode == "raise":
                raise RuntimeError("FaultyEnv exploded")
            obs = obs * np.nan
        return obs, reward, terminated, truncated, info
