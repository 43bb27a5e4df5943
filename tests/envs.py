"""Tiny environments for fast behaviour tests."""

import itertools
import time

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
    """An IdentityEnv that misbehaves once it has taken `fail_after` steps (or resets).

    Modes: "raise" raises in `step`; "reset" raises in the `fail_after`-th `reset` (1 is the
    first); "nan" returns a NaN observation; "inf_reward" an infinite reward; "huge_reward" a
    finite reward so large (3e38) that the n-step return overflows float32.
    `FaultyEnv.raised_at` holds the `time.perf_counter()` of the last raise.
    """

    raised_at: float | None = None

    def __init__(self, fail_after: int = 50, mode: str = "raise"):
        super().__init__()
        self.fail_after, self.mode, self.steps, self.resets = fail_after, mode, 0, 0

    def _explode(self, where: str):
        FaultyEnv.raised_at = time.perf_counter()
        raise RuntimeError(f"FaultyEnv exploded in {where}")

    def reset(self, *, seed=None, options=None):
        self.resets += 1
        if self.mode == "reset" and self.resets >= self.fail_after:
            self._explode("reset")
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        obs, reward, terminated, truncated, info = super().step(action)
        if self.steps >= self.fail_after:
            if self.mode == "raise":
                self._explode("step")
            elif self.mode == "nan":
                obs = obs * np.nan
            elif self.mode == "inf_reward":
                reward = np.inf
            elif self.mode == "huge_reward":
                reward = 3e38
        return obs, reward, terminated, truncated, info


def one_faulty(index: int, **kwargs):
    """An env factory whose `index`-th env (counting from 0) is a FaultyEnv, the others IdentityEnvs."""
    made = itertools.count()
    return lambda: FaultyEnv(**kwargs) if next(made) == index else IdentityEnv()


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


class BeyondTheBoundEnv(ContinuousIdentityEnv):
    """A ContinuousIdentityEnv whose target lies outside the action bounds: observe s in {-1, 1}, reward
    -(a - 1.5 s)^2 for the action a in [-1, 1] (the env clips). Acting s (the bound) is best, and any
    mean beyond it acts the same, so the policy gradient alone lets the Gaussian mean drift out."""

    def _observe(self):
        self.sign = float(self.np_random.choice([-1.0, 1.0]))
        self.target = np.full(self.dim, 1.5 * self.sign, np.float32)
        return np.full(self.dim, self.sign, np.float32)


class MultiDiscreteIdentityEnv(IdentityEnv):
    """Observe one one-hot target per part, side by side; reward 1 per part chosen right, so the best
    policy earns K per step, 10 K an episode, and a uniform one 10 sum_k 1 / nvec_k."""

    def __init__(self, nvec: tuple[int, ...] = (3, 2, 4), episode_length: int = 10):
        super().__init__(sum(nvec), episode_length)
        self.nvec = tuple(nvec)
        self.action_space = gym.spaces.MultiDiscrete(nvec)

    def _observe(self):
        self.target = np.array([self.np_random.integers(n) for n in self.nvec])
        return np.concatenate([np.eye(n, dtype=np.float32)[t] for n, t in zip(self.nvec, self.target, strict=True)])

    def step(self, action):
        assert self.action_space.contains(action), f"action {action!r} is not in {self.action_space}"
        reward = float(np.sum(action == self.target))
        self.t += 1
        return self._observe(), reward, False, self.t >= self.episode_length, {}


class MultiBinaryIdentityEnv(MultiDiscreteIdentityEnv):
    """Observe n bits (as +-1); reward 1 per bit copied into the action: the best policy earns n per
    step, 10 n an episode, and a uniform one 5 n."""

    def __init__(self, n: int = 5, episode_length: int = 10):
        super().__init__((2,) * n, episode_length)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (n,), np.float32)
        self.action_space = gym.spaces.MultiBinary(n)

    def _observe(self):
        self.target = self.np_random.integers(0, 2, len(self.nvec))
        return (2.0 * self.target - 1.0).astype(np.float32)


class DictIdentityEnv(IdentityEnv):
    """An IdentityEnv whose observation is a Dict: the target as a Discrete entry "target", plus a Box
    entry "noise" [2, 3] of N(5, 2) values (offset and scaled, so its normalisation has work to do) that
    carry no information. A uniform policy earns 10 / n per episode, the optimal one 10."""

    def __init__(self, n: int = 4, episode_length: int = 10):
        super().__init__(n, episode_length)
        self.observation_space = gym.spaces.Dict({
            "target": gym.spaces.Discrete(n), "noise": gym.spaces.Box(-np.inf, np.inf, (2, 3), np.float32)})

    def _observe(self):
        self.target = int(self.np_random.integers(self.n))
        return {"target": self.target, "noise": self.np_random.normal(5.0, 2.0, (2, 3)).astype(np.float32)}


class TupleIdentityEnv(DictIdentityEnv):
    """DictIdentityEnv as a Tuple (target, noise)."""

    def __init__(self, n: int = 4, episode_length: int = 10):
        super().__init__(n, episode_length)
        spaces = self.observation_space.spaces
        self.observation_space = gym.spaces.Tuple((spaces["target"], spaces["noise"]))

    def _observe(self):
        observation = super()._observe()
        return observation["target"], observation["noise"]


class MaskedIdentityEnv(IdentityEnv):
    """A Dict observation {"target", "action_mask"}: each step 3 of the 6 actions are valid (the mask) and
    the target is one of them. Reward 1 for the target, 0 for another valid action; an invalid action ends
    the episode with reward -1 (and is counted in `MaskedIdentityEnv.invalid_actions`, over all copies).
    A uniform policy over the valid actions earns 10 / 3 per episode, the optimal one 10."""

    invalid_actions = 0

    def __init__(self, n: int = 6, episode_length: int = 10, mask_dtype=np.int8):
        super().__init__(n, episode_length)
        self.mask_dtype = mask_dtype
        self.observation_space = gym.spaces.Dict({
            "target": gym.spaces.Discrete(n), "action_mask": gym.spaces.Box(0, 1, (n,), mask_dtype)})

    def _observe(self):
        valid = self.np_random.choice(self.n, 3, replace=False)
        self.mask = np.zeros(self.n, self.mask_dtype)
        self.mask[valid] = 1
        self.target = int(valid[0])
        return {"target": self.target, "action_mask": self.mask.copy()}

    def step(self, action):
        if not self.mask[action]:
            MaskedIdentityEnv.invalid_actions += 1
            return self._observe(), -1.0, True, False, {}
        return super().step(action)


class ImageIdentityEnv(IdentityEnv):
    """Observe a [10, 10, 2] image, uint8 (0 / 255) or bool like MinAtar's: channel 0 lights the quadrant
    of the target (one of 4 actions), channel 1 is noise. Reward 1 for the target; 10 steps an episode."""

    def __init__(self, dtype=np.uint8, episode_length: int = 10):
        super().__init__(4, episode_length)
        high = 1 if dtype is bool else 255
        self.observation_space = gym.spaces.Box(0, high, (10, 10, 2), dtype)

    def _observe(self):
        self.target = int(self.np_random.integers(4))
        image = np.zeros((10, 10, 2), self.observation_space.dtype)
        row, column = divmod(self.target, 2)
        image[5 * row:5 * row + 5, 5 * column:5 * column + 5, 0] = self.observation_space.high.flat[0]
        image[..., 1] = self.np_random.integers(0, 2, (10, 10)) * self.observation_space.high.flat[0]
        return image


class InfoMaskedIdentityEnv(MaskedIdentityEnv):
    """MaskedIdentityEnv that observes only the target and gives its mask in `info["action_mask"]`, as
    gymnasium's Taxi does."""

    def __init__(self, n: int = 6, episode_length: int = 10):
        super().__init__(n, episode_length)
        self.observation_space = self.observation_space.spaces["target"]

    def reset(self, *, seed=None, options=None):
        observation, _ = super().reset(seed=seed, options=options)
        return observation["target"], {"action_mask": observation["action_mask"]}

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        return observation["target"], reward, terminated, truncated, {**info, "action_mask": observation["action_mask"]}


class DictObservation(gym.ObservationWrapper):
    """Any env observed as a Dict {"x": its observation, "flag": Discrete(2), always 1, "bits":
    MultiBinary(3), always [1, 0, 1]}: three storage dtypes (float32, int32, int8) in its segments."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({"x": env.observation_space, "flag": gym.spaces.Discrete(2),
                                                  "bits": gym.spaces.MultiBinary(3)})

    def observation(self, observation):
        return {"x": observation, "flag": 1, "bits": np.array([1, 0, 1], np.int8)}


class ObservationSpaceEnv(IdentityEnv):
    """An IdentityEnv that declares an arbitrary observation space (to test which spaces are rejected)."""

    def __init__(self, observation_space: gym.Space):
        super().__init__()
        self.observation_space = observation_space


class SpaceEnv(IdentityEnv):
    """An IdentityEnv with an arbitrary action space (to test which spaces are rejected)."""

    def __init__(self, action_space: gym.Space):
        super().__init__()
        self.action_space = action_space


class ScaledIdentityEnv(IdentityEnv):
    """An IdentityEnv whose observations are 50 * one-hot + 100 and whose rewards are `reward_scale`
    times the original: a network that does not normalise its inputs sees values far from O(1)."""

    def __init__(self, n: int = 4, reward_scale: float = 1.0):
        super().__init__(n)
        self.reward_scale = reward_scale
        self.observation_space = gym.spaces.Box(100.0, 150.0, (n,), np.float32)

    def _observe(self):
        return 50.0 * super()._observe() + 100.0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, self.reward_scale * reward, terminated, truncated, info


class CueEnv(gym.Env):
    """Only the first observation of an episode is informative: a one-hot cue in {0..n-1}; every later
    observation is zeros. Reward 1 for each step whose action is the cue; `episode_length` steps.

    A policy that remembers the cue earns `episode_length`; one that forgets it gets the first step
    right and guesses after: 1 + (episode_length - 1) / n in expectation. Episodes terminate (no
    bootstrap), so values stay below `episode_length`.
    """

    def __init__(self, n: int = 2, episode_length: int = 4):
        self.n, self.episode_length = n, episode_length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (n,), np.float32)
        self.action_space = gym.spaces.Discrete(n)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(self.n))
        return np.eye(self.n, dtype=np.float32)[self.cue], {}

    def step(self, action):
        reward = float(action == self.cue)
        self.t += 1
        return np.zeros(self.n, np.float32), reward, self.t >= self.episode_length, False, {}
