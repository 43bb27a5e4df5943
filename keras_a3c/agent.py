"""`A3C`: a `keras.Model` holding the shared actor-critic network and its compiled update, and the
front door to training (`keras_a3c.trainer`), evaluation (`keras_a3c.evaluation`), saving
(`keras_a3c.saving`) and export (`keras_a3c.export`)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from keras_a3c import saving
from keras_a3c.acting import policy_function, predict_actions
from keras_a3c.config import A3CConfig, default_optimizer
from keras_a3c.distributions import for_action_space
from keras_a3c.envs import EnvSpec, env_spaces
from keras_a3c.evaluation import evaluate_policy
from keras_a3c.export import export_policy
from keras_a3c.learner import UPDATE_LOGS, Learner
from keras_a3c.metrics import RunningMeans
from keras_a3c.networks import check_network
from keras_a3c.normalization import RewardNormalizer
from keras_a3c.ray_backend import RayBackend, RayTrainer
from keras_a3c.recurrent import state_sizes
from keras_a3c.trainer import Trainer, ctrl_c_as_flag
from keras_a3c.training_state import TrainingState


class A3C(keras.Model):
    """Asynchronous advantage actor-critic (Mnih et al. 2016) around a Keras network.

    Args:
      network: a `keras.Model` mapping float32 observations [B, *obs_shape] to
        (policy params, value [B, 1] or [B]); see `actor_critic_mlp`. The policy params
        are logits [B, A] for a `Discrete(A)` action space (categorical policy),
        concat(mean, log_std) [B, 2D] for a `Box((D,))` one (diagonal Gaussian policy), logits
        [B, sum(nvec)] for `MultiDiscrete(nvec)` and [B, n] for `MultiBinary(n)` (factorised policies).
        A recurrent network maps [observations, *state] to [params, value, *new_state] (see
        `keras_a3c.recurrent`; `actor_critic_mlp(..., lstm_units=64)`).
      action_space: how to read the policy params. Optional: `fit` and `evaluate` take it
        from the env (and reject an env whose action space differs). `predict` and
        `export` before either treat the params as logits unless it is given.
      seed: seeds the agent's generator, from which `fit(seed=None)` draws the env and
        sampling seeds; None draws it from numpy's global generator (which
        `keras.utils.set_random_seed` seeds).

    Usage:
      agent = A3C(actor_critic_mlp(env.observation_space, env.action_space))
      agent.compile(keras.optimizers.Adam(3e-3), entropy_coef=0.01)   # or config=A3CConfig(...)
      history = agent.fit("CartPole-v1", total_steps=300_000, workers=8)
      mean, std = agent.evaluate("CartPole-v1", episodes=100)
      agent.export("policy/")
    """

    def __init__(
        self, network: keras.Model, action_space: gym.Space | None = None, seed: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        if not isinstance(network, keras.Model):
            raise TypeError(f"network must be a keras.Model, got {type(network).__name__}")
        if action_space is not None:
            for_action_space(action_space)  # a clear error for unsupported spaces
        self.network = network
        self.action_space = action_space
        # Means over the updates since the last reset (each epoch end) of what every update logs.
        self.update_logs = RunningMeans(UPDATE_LOGS, name="update_logs")
        # Global counters and episode statistics: they run on across fits and save / load.
        self.training_state = TrainingState()
        self.rng = np.random.default_rng(np.random.randint(2**31) if seed is None else seed)
        self.config: A3CConfig | None = None
        self.learner: Learner | None = None
        self.reward_normalizer: RewardNormalizer | None = None
        self.built = network.built

    def call(self, observations, training: bool = False):
        return self.network(observations, training=training)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.update_logs]

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer | None = None,
        config: A3CConfig | None = None,
        **overrides: Any,
    ) -> None:
        """Configure training: the shared optimizer and the update's settings.

        Args:
          optimizer: shared by all workers (one set of slots, as the paper's shared RMSProp); None is
            `keras_a3c.config.default_optimizer()`.
          config: the update's settings (`A3CConfig`); None takes its defaults.
          **overrides: fields of `A3CConfig` to change, e.g. `entropy_coef=0.02, gamma=0.98`.
        """
        config = (config or A3CConfig()).replace(**overrides)
        super().compile(optimizer=optimizer or default_optimizer(), jit_compile=False)
        self.config = config
        self.learner = Learner(self.network, self.optimizer, config, self.update_logs)
        self.reward_normalizer = (RewardNormalizer(config.gamma, config.reward_clip) if config.normalize_rewards
                                  else None)

    def train_step(self, data) -> dict[str, tf.Tensor]:
        """One A3C update from one segment, as Keras's `train_step`: returns the logs.

        Args:
          data: a segment, the dict `Learner.update` takes (observations [T+1, B, *obs], actions,
            rewards, terminated, truncated, valid), or Keras's (segment, None, None).
        """
        segment, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.learner.update(segment, self._require_action_space())
        return self.update_logs.result()

    def fit(
        self,
        env: EnvSpec,
        total_steps: int,
        workers: int = 8,
        envs_per_worker: int = 8,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        verbose: int = 1,
        seed: int | None = None,
        steps_per_epoch: int = 10_000,
        backend: RayBackend | None = None,
    ) -> keras.callbacks.History:
        """Train with `workers` asynchronous actor-learners, each stepping its own batch of envs: threads of
        this process, or of Ray actor processes with `backend=RayBackend(...)`.

        The agent's counters carry on across calls (and across `save` / `keras_a3c.load`):
        `total_steps` more env steps are taken, the logged `env_steps`, `episodes`, `time`
        and epochs continue from where the last fit (or the saved agent) stopped, and so
        do `optimizer.iterations` and any learning-rate schedule keyed on it.

        Args:
          env: a gymnasium id or a zero-argument factory returning a `gymnasium.Env`
            (called once per env copy, so wrappers apply).
          total_steps: env steps (transitions, summed over workers) to train for in this
            call; the last segments in flight may add up to workers * envs_per_worker * n_steps.
          workers: number of actor-learner threads.
          envs_per_worker: envs each worker steps as one batch.
          callbacks: Keras callbacks, called from this (the main) thread.
          verbose: 0 silent, 1 progress bar, 2 one line per epoch.
          seed: seeds envs and action sampling (worker i uses seed + i * envs_per_worker)
            and reseeds the agent's generator; None draws the seed from that generator,
            whose state `save` keeps, so a resumed run does not replay old random streams.
          steps_per_epoch: env steps per epoch (History row); epoch k ends at global env
            step (k + 1) * steps_per_epoch.
          backend: None runs the workers as threads of this process; a `keras_a3c.RayBackend` runs them in
            Ray actors (see `keras_a3c.ray_backend`): same callbacks, History, counters and errors; the logs
            also count `actor_failures`.

        Returns:
          a `keras.callbacks.History` whose rows are epochs of `steps_per_epoch` env steps,
          and whose `episodes` holds every finished training episode of the agent (see
          `TrainingState.episode_log`): `time` (training seconds, counted from each `fit`
          call and summed over calls), `env_steps` (global env steps taken when it ended),
          `return` and `length`.
        """
        start_time = time.perf_counter()  # "time" in the logs counts from here, set-up included
        if self.learner is None:
            raise RuntimeError("call compile() before fit()")
        for name, value in (("total_steps", total_steps), ("workers", workers),
                            ("envs_per_worker", envs_per_worker), ("steps_per_epoch", steps_per_epoch)):
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        if backend is not None and not isinstance(backend, RayBackend):
            raise TypeError(f"backend must be None or a keras_a3c.RayBackend, got {type(backend).__name__}")
        if backend is not None and backend.actors > workers:
            raise ValueError(f"{backend.actors} Ray actors need at least as many workers, got workers={workers}")
        with ctrl_c_as_flag() as ctrl_c:  # from here on Ctrl-C stops the run once its workers are joined
            spaces = self.check_env(env)
            if seed is None:
                seed = int(self.rng.integers(2**31))
            else:
                self.rng = np.random.default_rng(seed)
            arguments = (self, env, spaces, total_steps, workers, envs_per_worker, callbacks or [], verbose, seed,
                         steps_per_epoch, start_time, ctrl_c)
            trainer = Trainer(*arguments) if backend is None else RayTrainer(*arguments, backend=backend)
            return trainer.run()

    @property
    def env_steps(self) -> int:
        """Env steps the agent has trained on, over all its fits (and the fits of the agent it was loaded from)."""
        return self.training_state.env_steps

    @property
    def train_trace_count(self) -> int:
        """How often the compiled update was traced (stays 1 during `fit`)."""
        return self.learner.trace_count

    @contextlib.contextmanager
    def paused_updates(self) -> Iterator[None]:
        """Hold off the workers' updates (unless hogwild) while the block runs, so what it reads
        of the weights, the optimizer and the counters belongs together."""
        lock = self.learner.lock if self.learner is not None else None
        with lock if lock is not None else contextlib.nullcontext():
            yield

    # ---------------------------------------------------------------- acting

    def predict(self, observations, deterministic: bool = True, seed: int | None = None,
                state: np.ndarray | None = None, episode_start: np.ndarray | None = None):
        """Env actions for a batch of observations [B, *obs_shape] -> [B] int (Discrete),
        [B, D] float32 (Box, clipped to the bounds) or [B, K] int in the space's dtype (MultiDiscrete,
        MultiBinary); one observation -> one action.
        The most likely action (argmax, or the Gaussian mean) when `deterministic`, else sampled.

        A recurrent network (see `keras_a3c.recurrent`) also takes the state [B, S] its last call returned
        (None, or `initial_state(B)`, at the start), zeroed first in the rows where `episode_start` [B] is
        true, and returns (actions, new state [B, S]), as Stable-Baselines3's recurrent policies do:

            state = None
            actions, state = agent.predict(observations, state=state, episode_start=starts)
        """
        return predict_actions(self.network, self.action_space, observations, deterministic, seed, state,
                               episode_start)

    def initial_state(self, batch_size: int = 1) -> np.ndarray:
        """The state a recurrent network begins an episode with: zeros [batch_size, S] (S = 0 when feedforward)."""
        return np.zeros((batch_size, sum(state_sizes(self.network))), np.float32)

    def evaluate(
        self, env: EnvSpec, episodes: int = 100, deterministic: bool = True, num_envs: int = 16, seed: int = 10_000
    ) -> tuple[float, float]:
        """Mean and standard deviation of the return over `episodes` episodes of the greedy
        (`deterministic`) or sampling policy; see `keras_a3c.evaluation.evaluate_policy`."""
        _, action_space = self.check_env(env)
        policy = policy_function(self.network, action_space, deterministic, np.random.default_rng(seed))
        initial_state = self.initial_state if state_sizes(self.network) else None
        returns = evaluate_policy(policy, env, episodes, num_envs, seed, initial_state)
        return float(np.mean(returns)), float(np.std(returns))

    # ---------------------------------------------------------------- saving and export

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> str:
        """Save the whole training state to the directory `path`, atomically; returns its absolute path.

        Weights, optimizer variables, counters (env steps, updates, episodes, seconds), episode
        statistics, the agent's RNG state and the configuration: `keras_a3c.load(path)` rebuilds
        the agent and `fit` carries on from the saved global step. Safe to call from a callback
        during `fit`. An existing `path` is an error unless `overwrite`; see `keras_a3c.saving`.
        """
        return saving.write_state(path, self.get_train_state(), overwrite=overwrite)

    def get_train_state(self) -> saving.TrainState:
        """Everything a save keeps, as (JSON-able settings and counters, named numpy arrays).

        During `fit` the state is read between two updates, so the weights, the optimizer slots and
        the counters belong together (with `hogwild=True` the weights may mix two updates, as
        Hogwild reads always do)."""
        with self.paused_updates():
            weights = self.network.get_weights()
            optimizer = self.optimizer if self.learner is not None else None
            slots = [v.numpy() for v in optimizer.variables] if optimizer is not None and optimizer.built else []
            counters, arrays = self.training_state.state_dict()
            if self.reward_normalizer is not None:
                arrays.update(self.reward_normalizer.state_dict())
            rng_state = self.rng.bit_generator.state
        settings = {
            "network": keras.saving.serialize_keras_object(self.network),
            "network_weights": len(weights),
            "action_space": None if self.action_space is None else saving.space_to_config(self.action_space),
            "compile": None if optimizer is None
            else {**self.config.to_dict(), "optimizer": keras.optimizers.serialize(optimizer)},
            "optimizer_variables": len(slots),
            "counters": counters,
            "rng": rng_state,
        }
        arrays.update({f"network_{i}": w for i, w in enumerate(weights)})
        arrays.update({f"optimizer_{i}": v for i, v in enumerate(slots)})
        return settings, arrays

    def set_train_state(self, state: saving.TrainState) -> None:
        """Restore a state from `get_train_state` into this agent (its network must have the saved
        architecture): weights, compile settings and optimizer variables, counters, RNG state."""
        settings, arrays = state
        weights = [arrays[f"network_{i}"] for i in range(settings["network_weights"])]
        saving.assign(self.network.weights, weights, "network")
        if settings["action_space"] is not None:
            self.action_space = saving.space_from_config(settings["action_space"])
        if settings["compile"] is not None:
            compile_settings = dict(settings["compile"])
            optimizer = keras.optimizers.deserialize(compile_settings.pop("optimizer"))
            self.compile(optimizer, A3CConfig.from_dict(compile_settings))
            if settings["optimizer_variables"]:
                self.optimizer.build(self.network.trainable_variables)
                slots = [arrays[f"optimizer_{i}"] for i in range(settings["optimizer_variables"])]
                saving.assign(self.optimizer.variables, slots, "optimizer")
        if self.reward_normalizer is not None:
            self.reward_normalizer.load_state_dict(arrays)
        self.training_state = TrainingState.from_state_dict(settings["counters"], arrays)
        self.rng.bit_generator.state = settings["rng"]

    def export(self, path: str | os.PathLike, format: str = "saved_model") -> None:
        """Write the policy to the new `path`: a TF SavedModel with the endpoints serve, sample,
        action_distribution and value (`format="saved_model"`), the deterministic policy as a
        TFLite file (`format="tflite"`), or the deterministic endpoints as an ONNX model
        (`format="onnx"`, needs tf2onnx); see `keras_a3c.export` for the signatures."""
        export_policy(self.network, path, self.action_space, format)

    def check_env(self, env: EnvSpec) -> tuple[gym.Space, gym.Space]:
        """The (observation, action) spaces of `env`, once the network is checked to take them (`check_network`);
        the agent adopts the env's action space, or rejects an env whose action space is not the agent's.
        `fit` and `evaluate` call it first."""
        observation_space, action_space = env_spaces(env)
        check_network(self.network, observation_space, action_space)
        if self.action_space is None:
            self.action_space = action_space
        elif self.action_space != action_space:
            raise ValueError(
                f"the env's action space {action_space} differs from the agent's action space {self.action_space}"
            )
        return observation_space, action_space

    def _require_action_space(self) -> gym.Space:
        if self.action_space is None:
            raise RuntimeError("the agent's action space is unknown: pass action_space to A3C, or call fit first")
        return self.action_space


def load(path: str | os.PathLike, network: keras.Model | None = None) -> A3C:
    """Rebuild an agent saved by `A3C.save` (or a `Checkpoint`), ready to `fit` on from the saved global step.

    Args:
      path: the save directory.
      network: optional; a model of the saved architecture to load the weights into,
        for networks Keras cannot rebuild from their config (unregistered custom layers).

    Raises:
      FileNotFoundError: nothing at `path`.
      ValueError: `path` is not a keras_a3c save, it is corrupt or incomplete, or it does not fit `network`.
    """
    path = os.path.abspath(os.fspath(path))
    state = saving.read_state(path)
    try:
        agent = A3C(network if network is not None else saving.rebuild_network(state[0], path))
        agent.set_train_state(state)
    except KeyError as exc:
        raise ValueError(f"the keras_a3c save at {path} is incomplete or corrupt: missing {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"cannot load the keras_a3c save at {path}: {exc}") from exc
    return agent
