"""`A3CConfig`: the settings of the A3C update, one frozen object that `A3C.compile` takes and a save keeps."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class A3CConfig:
    """How the learner turns a worker's segment into an update (Mnih et al. 2016, Algorithm S3).

    Every field is checked when the config is made: a bad value is a `ValueError` naming it. The
    defaults, with `default_optimizer()` and `actor_critic_mlp`'s, learn CartPole-v1, Acrobot-v1,
    LunarLander-v3 and Pendulum-v1 without per-task tuning (see benchmarks/results/defaults_sweep.md).

    Attributes:
      n_steps: t_max, env steps per worker segment (one update per segment), >= 1.
      gamma: discount of the n-step return, in [0, 1].
      entropy_coef: beta, weight of the entropy bonus, >= 0.
      entropy_decay_updates: if > 0, beta decays linearly from `entropy_coef` to a tenth of it over
        this many updates, then holds (keyed on the shared optimizer's iterations, so it carries on
        across save / load): explore early, act closer to greedy late. 0 keeps beta constant.
      value_coef: weight of the value loss, >= 0.
      max_grad_norm: clip the gradients to this global norm (> 0); None does not clip.
      reward_scale: the learner trains on reward_scale * r_t (V learns the scaled return; logged
        episode returns stay unscaled), > 0; keeps value targets O(1) for envs with large rewards.
      hogwild: apply updates without a lock (lock-free, as in the paper); by default a lock
        serialises them.
      gae_lambda: lambda of the generalised advantage estimate, in [0, 1]; 1 trains on the
        n-step returns of the paper, lower values trade variance for bias (`losses.lambda_returns`).
      normalize_advantages: standardise the advantages of each segment (over its valid steps)
        before they weight the policy gradient; the value target is unchanged.
      normalize_rewards: divide rewards by a running estimate of the standard deviation of the
        discounted return (as Stable-Baselines3's `VecNormalize(norm_reward=True)`), so value
        targets stay O(1) whatever the reward scale; logged episode returns stay raw.
      reward_clip: with `normalize_rewards`, clip the normalised rewards to [-reward_clip,
        reward_clip] (> 0); None does not clip.
      clip_raw_rewards: clip each reward the env returns to [-clip_raw_rewards, clip_raw_rewards]
        (> 0) before anything else the learner does with it (the Atari reward clipping of the DQN and
        A3C papers, 1); logged episode returns stay raw. None (the default) does not clip.
      action_bound_coef: for a Gaussian policy over a bounded `Box`, weight (>= 0) of
        `losses.action_bound_loss`, which keeps the mean inside the bounds (the env clips actions,
        so nothing else stops the mean drifting out); 0 turns it off.
      jit_compile: compile the update's forward and backward pass with XLA (as Keras's
        `compile(jit_compile=True)` does a train step; the finite checks stay outside, XLA drops them):
        the first update takes a few seconds longer, each one after may be cheaper. It pays on the Atari
        network (Pong: 18% more env steps a second) but not everywhere (MinAtar's made 26% fewer with its
        whole update under XLA), hence off by default; docs/performance.md has the measurements.
      importance_clip: rho-bar (> 0) of a truncated importance weight min(rho-bar, pi(a|s) / mu(a|s)) on
        each step's policy-gradient term (IMPALA's correction, Espeholt et al. 2018), mu being the policy
        the worker acted with and pi the shared one the update differentiates; it corrects for the policy
        lag of asynchronous updates (`losses.truncated_importance_weights`). None (the default): no
        correction, as the A3C paper.
    """

    n_steps: int = 16
    gamma: float = 0.99
    entropy_coef: float = 0.001
    entropy_decay_updates: int = 0
    value_coef: float = 0.5
    max_grad_norm: float | None = 0.5
    reward_scale: float = 1.0
    hogwild: bool = False
    gae_lambda: float = 0.95
    normalize_advantages: bool = False
    normalize_rewards: bool = True
    reward_clip: float | None = 10.0
    action_bound_coef: float = 1.0
    clip_raw_rewards: float | None = None
    jit_compile: bool = False
    importance_clip: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.n_steps, int) and not isinstance(self.n_steps, bool) and self.n_steps >= 1):
            raise ValueError(f"n_steps must be an integer >= 1, got {self.n_steps!r}")
        if not (isinstance(self.entropy_decay_updates, int) and not isinstance(self.entropy_decay_updates, bool)
                and self.entropy_decay_updates >= 0):
            raise ValueError(f"entropy_decay_updates must be an integer >= 0, got {self.entropy_decay_updates!r}")
        if not (_finite_number(self.gamma) and 0.0 <= self.gamma <= 1.0):
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        for name in ("entropy_coef", "value_coef", "action_bound_coef"):
            value = getattr(self, name)
            if not (_finite_number(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.max_grad_norm is not None and not (_finite_number(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if not (_finite_number(self.reward_scale) and self.reward_scale > 0):
            raise ValueError(f"reward_scale must be a finite number > 0, got {self.reward_scale!r}")
        for name in ("hogwild", "normalize_advantages", "normalize_rewards", "jit_compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not (_finite_number(self.gae_lambda) and 0.0 <= self.gae_lambda <= 1.0):
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda!r}")
        for name in ("reward_clip", "clip_raw_rewards", "importance_clip"):
            value = getattr(self, name)
            if value is not None and not (_finite_number(value) and value > 0):
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")

    def replace(self, **overrides: Any) -> A3CConfig:
        """A copy with some fields changed (checked as a new config); an unknown name is a `TypeError`."""
        unknown = set(overrides) - {field.name for field in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown A3C setting(s) {sorted(unknown)}; A3CConfig has {self.field_names()}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (what a save keeps)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> A3CConfig:
        """The inverse of `to_dict`; an unknown name is a `TypeError`."""
        return cls().replace(**values)

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]


def decay_to_a_tenth(initial: float, updates: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """`initial` decaying linearly to a tenth of it over `updates` steps, then holding: the schedule of a
    preset's decaying learning rate and of `A3CConfig.entropy_decay_updates`."""
    return keras.optimizers.schedules.PolynomialDecay(initial, updates, initial / 10)


def default_optimizer() -> keras.optimizers.Optimizer:
    """The optimizer of `A3C.compile()` without one: RMSprop (the A3C paper's shared RMSProp) with
    learning rate 7e-4 and epsilon 1e-5 (as A2C in OpenAI Baselines and Stable-Baselines3) and Keras's
    rho 0.9: the settings `benchmarks/sweep.py` measured."""
    return keras.optimizers.RMSprop(7e-4, epsilon=1e-5)
