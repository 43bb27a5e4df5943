"""Named presets: settings that learn a task, in one place. The examples take their flag defaults
from them, `flags/<name>.flags` holds the same values (a test keeps the two equal), and the
benchmarks build their agents with them.

    preset = keras_a3c.presets.get("cartpole")
    agent = preset.make_agent()                          # network, optimizer and A3CConfig of the preset
    agent.fit(preset.env, total_steps=preset.total_steps, **preset.fit_kwargs())
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import keras

from keras_a3c.agent import A3C
from keras_a3c.callbacks import StopOnMeanReturn
from keras_a3c.config import A3CConfig, decay_to_a_tenth
from keras_a3c.envs import env_spaces
from keras_a3c.networks import CNN_ARCHITECTURES, STD_PARAMETERISATIONS, actor_critic_cnn, actor_critic_mlp

OPTIMIZERS = ("adam", "rmsprop")
# "mlp": `actor_critic_mlp`; any other: `actor_critic_cnn` with that architecture.
NETWORKS = ("mlp", *CNN_ARCHITECTURES)


@dataclasses.dataclass(frozen=True)
class Preset:
    """Everything that sets how an agent learns a task, checked when made.

    Attributes:
      env: the gymnasium id the settings were chosen on.
      config: the update's settings (`A3CConfig`).
      optimizer: "adam", or "rmsprop" (Keras's rho 0.9; the A3C paper's shared RMSProp).
      learning_rate: the optimizer's initial learning rate.
      learning_rate_decay_updates: if > 0, the learning rate decays linearly to a tenth of
        `learning_rate` over this many updates, then holds (keyed on `optimizer.iterations`,
        so it carries on across save / load); 0 keeps it constant.
      epsilon: the optimizer's epsilon.
      network: "mlp" (`actor_critic_mlp`), or the `actor_critic_cnn` architecture ("atari", "minatar").
      hidden_units: widths of the shared MLP trunk (`actor_critic_mlp`).
      std: the Gaussian head's std parameterisation (Box actions only).
      log_std_init: the Gaussian head's initial log std (Box actions only).
      normalize_observations: start the network with an `ObservationNormalization` layer.
      lstm_units: > 0 makes the network recurrent: an LSTM cell of this many units before the heads.
      workers: actor-learner threads.
      envs_per_worker: envs each worker steps as one batch.
      total_steps: env steps to train for.
      target_return: stop once the mean return of the last 100 training episodes reaches this.
      target_eval_episodes: if > 0, the greedy policy must reach `target_return` too, over this many
        episodes, before training stops (`StopOnMeanReturn`'s `eval_episodes`); 0: the training mean alone.
      eval_episodes: episodes of the greedy evaluation after training.
      steps_per_epoch: env steps per Keras epoch (one History row).
    """

    env: str
    config: A3CConfig
    learning_rate: float
    optimizer: str = "adam"
    learning_rate_decay_updates: int = 0
    epsilon: float = 1e-7
    network: str = "mlp"
    hidden_units: tuple[int, ...] = (64, 64)
    std: str = "state_independent"
    log_std_init: float = 0.0
    normalize_observations: bool = False
    lstm_units: int = 0
    workers: int = 8
    envs_per_worker: int = 8
    total_steps: int = 1_000_000
    target_return: float = float("inf")
    target_eval_episodes: int = 0
    eval_episodes: int = 100
    steps_per_epoch: int = 10_000

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and self.epsilon > 0):
            raise ValueError(f"learning_rate and epsilon must be > 0, got {self.learning_rate!r}, {self.epsilon!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {NETWORKS}, got {self.network!r}")
        if self.std not in STD_PARAMETERISATIONS:
            raise ValueError(f"std must be one of {STD_PARAMETERISATIONS}, got {self.std!r}")
        for name in ("workers", "envs_per_worker", "total_steps", "steps_per_epoch", "learning_rate_decay_updates",
                     "eval_episodes", "target_eval_episodes", "lstm_units"):
            value = getattr(self, name)
            low = 0 if name in ("learning_rate_decay_updates", "eval_episodes", "target_eval_episodes",
                                "lstm_units") else 1
            if not (isinstance(value, int) and value >= low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (self.hidden_units and all(isinstance(u, int) and u >= 1 for u in self.hidden_units)):
            raise ValueError(f"hidden_units must be positive integers, got {self.hidden_units!r}")

    def make_optimizer(self) -> keras.optimizers.Optimizer:
        """The preset's optimizer with its learning rate (and its linear decay, if any) and epsilon."""
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = self.learning_rate
        if self.learning_rate_decay_updates:
            learning_rate = decay_to_a_tenth(self.learning_rate, self.learning_rate_decay_updates)
        if self.optimizer == "rmsprop":
            return keras.optimizers.RMSprop(learning_rate, epsilon=self.epsilon)
        return keras.optimizers.Adam(learning_rate, epsilon=self.epsilon)

    def make_network(self, observation_space: gym.Space, action_space: gym.Space) -> keras.Model:
        """The preset's actor-critic for these spaces."""
        if self.network != "mlp":
            return actor_critic_cnn(observation_space, action_space, self.network, std=self.std,
                                    log_std_init=self.log_std_init, lstm_units=self.lstm_units)
        return actor_critic_mlp(observation_space, action_space, hidden_units=self.hidden_units, std=self.std,
                                log_std_init=self.log_std_init, normalize_observations=self.normalize_observations,
                                lstm_units=self.lstm_units)

    def make_agent(self) -> A3C:
        """A new agent for `env`, built and compiled with the preset's settings."""
        observation_space, action_space = env_spaces(self.env)
        agent = A3C(self.make_network(observation_space, action_space), action_space=action_space)
        agent.compile(self.make_optimizer(), self.config)
        return agent

    def fit_kwargs(self) -> dict[str, int]:
        """The preset's `A3C.fit` arguments besides the env and the step budget."""
        return {"workers": self.workers, "envs_per_worker": self.envs_per_worker,
                "steps_per_epoch": self.steps_per_epoch}

    def stop_on_target(self, verbose: int = 0) -> StopOnMeanReturn:
        """The callback that ends a fit at `target_return` (and, with `target_eval_episodes`, a greedy policy
        that reaches it too)."""
        greedy = {"eval_env": self.env, "eval_episodes": self.target_eval_episodes} if self.target_eval_episodes else {}
        return StopOnMeanReturn(self.target_return, verbose=verbose, **greedy)

    def flags(self) -> dict[str, Any]:
        """The preset as flat flag values, {flag name: value}, as the examples' flags and the
        flagfiles spell them (the config's fields inline; no clipping is 0)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values.update(values.pop("config").to_dict())
        values["max_grad_norm"] = values["max_grad_norm"] or 0.0
        values["reward_clip"] = values["reward_clip"] or 0.0
        values["clip_raw_rewards"] = values["clip_raw_rewards"] or 0.0
        values["importance_clip"] = values["importance_clip"] or 0.0
        values["hidden_units"] = list(values["hidden_units"])
        return values


# The library's defaults (`A3CConfig()`, `default_optimizer()`, `actor_critic_mlp`, `A3C.fit`) as a preset:
# what `examples/train.py` starts from, for any env.
DEFAULTS = Preset(
    env="CartPole-v1",
    config=A3CConfig(),
    learning_rate=7e-4,
    optimizer="rmsprop",
    epsilon=1e-5,
    normalize_observations=True,
    workers=8,
    envs_per_worker=8,
    total_steps=1_000_000,
    eval_episodes=20,
    steps_per_epoch=10_000,
)

# Faster on CartPole than the defaults (no normalisation, n-step returns, a decaying Adam). The importance
# weights keep its large learning rate from collapsing the policy (docs/performance.md).
CARTPOLE = Preset(
    env="CartPole-v1",
    config=A3CConfig(n_steps=5, gamma=0.98, entropy_coef=0.02, value_coef=0.5, max_grad_norm=5.0, gae_lambda=1.0,
                     normalize_rewards=False, importance_clip=1.0),
    learning_rate=4e-3,
    learning_rate_decay_updates=6000,
    epsilon=1e-5,
    workers=8,
    envs_per_worker=24,
    total_steps=1_000_000,
    target_return=495.0,
    target_eval_episodes=20,
    eval_episodes=100,
    steps_per_epoch=20_000,
)

# The settings of examples/pendulum.py, as benchmarks/pendulum_solve.py timed them (without the action bound
# loss); training stops at a mean return of -175.
PENDULUM = Preset(
    env="Pendulum-v1",
    config=A3CConfig(n_steps=8, gamma=0.9, entropy_coef=0.0, value_coef=0.5, max_grad_norm=0.5, reward_scale=0.1,
                     gae_lambda=1.0, normalize_rewards=False, action_bound_coef=0.0),
    learning_rate=3e-4,
    workers=8,
    envs_per_worker=16,
    total_steps=3_000_000,
    target_return=-175.0,
    eval_episodes=20,
    steps_per_epoch=50_000,
)

# The settings of examples/minatar_a3c.py: the MinAtar paper's network on MinAtar's 10x10 images; the defaults'
# update with the entropy bonus of the A3C paper's Atari runs (0.01), four times their learning rate and 2 envs a
# worker (more updates per env step); the learning rate and the entropy bonus both decay linearly to a tenth over
# the 10M env steps (312,500 updates of 2 envs x 16 steps), as the paper anneals its learning rate. On Breakout,
# seeds 0-2: training mean first >= 25 at 5.9M, 8.8M and 7.2M env steps, exported greedy policy 53.1, 34.8 and
# 43.0 over 20 episodes; without the learning-rate decay 22.3-31.1 (benchmarks/results/minatar_breakout.json).
MINATAR = Preset(
    env="MinAtar/Breakout-v1",
    config=A3CConfig(entropy_coef=0.01, entropy_decay_updates=312_500),
    learning_rate=2.8e-3,
    learning_rate_decay_updates=312_500,
    optimizer="rmsprop",
    epsilon=1e-5,
    network="minatar",
    workers=8,
    envs_per_worker=2,
    total_steps=10_000_000,
    eval_episodes=20,
    steps_per_epoch=100_000,
)

# The settings of examples/cartpole_memory.py: CartPole with the velocities hidden (examples/memory_env.py), which
# only a policy with memory solves; the defaults with an LSTM of 64 units after the trunk.
CARTPOLE_MEMORY = Preset(
    env="CartPoleNoVelocity-v1",
    config=A3CConfig(),
    learning_rate=7e-4,
    optimizer="rmsprop",
    epsilon=1e-5,
    normalize_observations=True,
    lstm_units=64,
    workers=8,
    envs_per_worker=8,
    total_steps=1_000_000,
    eval_episodes=20,
    steps_per_epoch=20_000,
)

# The settings of examples/atari.py: the A3C paper's Atari network, preprocessing (examples/atari_env.py) and
# update (n-step returns of 5 steps, entropy 0.01, rewards clipped to [-1, 1], RMSProp 7e-4), with the defaults'
# gradient clipping; 8 workers x 4 envs on 2 cores. XLA compiles the update's forward and backward pass, which
# is cheaper so on this network.
ATARI = Preset(
    env="AtariA3C/Pong-v5",
    config=A3CConfig(n_steps=5, entropy_coef=0.01, gae_lambda=1.0, normalize_rewards=False, clip_raw_rewards=1.0,
                     jit_compile=True),
    learning_rate=7e-4,
    optimizer="rmsprop",
    epsilon=1e-5,
    network="atari",
    workers=8,
    envs_per_worker=4,
    total_steps=10_000_000,
    eval_episodes=5,
    steps_per_epoch=50_000,
)

PRESETS = {"defaults": DEFAULTS, "cartpole": CARTPOLE, "pendulum": PENDULUM, "minatar": MINATAR,
           "cartpole_memory": CARTPOLE_MEMORY, "atari": ATARI}


def get(name: str) -> Preset:
    """The preset called `name` (one of PRESETS)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are {sorted(PRESETS)}")
    return PRESETS[name]
