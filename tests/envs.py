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


class ContinuousIdentityEnv(gym.Env):
    """Observe a target x in [-0.8, 0.8]^D; reward -sum_d (a_d - x_d)^2 for the action a in [-1, 1]^D.

    10 steps an episode. Always acting 0 earns about -2.1 * D per episode, acting x earns 0.
    """

    def __init__(self, dim: int = 1, episode_length: int = 10):
        self.dim, self.episode_length = dim, episode_length
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)

    def _observe(self):
        self.target = self.np_random.uniform(-0.8, 0.8, self.dim).astype(np.float32)
        return self.target.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observe(), {}

    def step(self, action):
        action = np.asarray(action, np.float32)
        assert self.action_space.contains(action), f"action {action} is outside the bounds"
        reward = -float(np.sum(np.square(action - self.target)))
        self.t += 1
        return self._observe(), reward, False, self.t >= self.episode_length, {}


class SpaceEnv(IdentityEnv):
    """An IdentityEnv with an arbitrary action space (to test which spaces are rejected)."""

    def __init__(self, action_space: gym.Space):
        super().__init__()
        self.action_space = action_space
