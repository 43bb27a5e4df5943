"""The learning side: `A3C`, a `keras.Model` with a custom `tf.GradientTape` train step,
and a Keras-style `fit` that runs asynchronous worker threads on one shared model."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from keras_a3c import losses
from keras_a3c.acting import ActionSampler, LocalPolicy, numpy_forward
from keras_a3c.callbacks import ProgressLogger
from keras_a3c.distributions import for_action_space
from keras_a3c.envs import EnvSpec, env_spaces, make_vector_env
from keras_a3c.export import export_policy
from keras_a3c.metrics import RunningMeans
from keras_a3c.networks import check_network
from keras_a3c.saving import save_agent
from keras_a3c.segment import SegmentLayout
from keras_a3c.workers import RunState, Worker

# How often the main thread wakes to run callbacks and refresh the progress display.
_TICK_SECONDS = 0.1
_NOT_FINITE = "not finite: A3C "
# What each update logs (averaged per epoch): the loss terms, the gradient norm, the critic's fit.
UPDATE_LOGS = ("loss", "policy_loss", "value_loss", "entropy", "grad_norm", "explained_variance")


class A3C(keras.Model):
    """Asynchronous advantage actor-critic (Mnih et al. 2016) around a Keras network.

    Args:
      network: a `keras.Model` mapping float32 observations [B, *obs_shape] to
        (policy params, value [B, 1] or [B]); see `actor_critic_mlp`. The policy params
        are logits [B, A] for a `Discrete(A)` action space (categorical policy) and
        concat(mean, log_std) [B, 2D] for a `Box((D,))` one (diagonal Gaussian policy).
      action_space: how to read the policy params. Optional: `fit` and `evaluate` take it
        from the env (and reject an env whose action space differs). `predict` and
        `export` before either treat the params as logits unless it is given.
      seed: seeds the agent's generator, from which `fit(seed=None)` draws the env and
        sampling seeds; None draws it from numpy's global generator (which
        `keras.utils.set_random_seed` seeds).

    Usage:
      agent = A3C(actor_critic_mlp(env.observation_space, env.action_space))
      agent.compile(optimizer=keras.optimizers.Adam(3e-3), entropy_coef=0.01)
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
        self.worker_state = RunState()
        self.rng = np.random.default_rng(np.random.randint(2**31) if seed is None else seed)
        self._train_lock: threading.Lock | None = None  # held by an update; `save` takes it too
        self.built = network.built

    def call(self, observations, training: bool = False):
        return self.network(observations, training=training)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.update_logs]

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "rmsprop",
        *,
        entropy_coef: float = 0.01,
        value_coef: float = 0.5,
        gamma: float = 0.99,
        n_steps: int = 5,
        max_grad_norm: float | None = None,
        hogwild: bool = False,
        reward_scale: float = 1.0,
    ) -> None:
        """Configure training.

        Args:
          optimizer: shared by all workers (one set of slots, as the paper's shared RMSProp).
          entropy_coef: beta, weight of the entropy bonus.
          value_coef: weight of the value loss.
          gamma: discount in [0, 1].
          n_steps: t_max, env steps per worker segment (one update per segment).
          max_grad_norm: clip gradients to this global norm; None for no clipping.
          hogwild: apply updates without a lock (lock-free, as in the paper);
            by default updates are serialised by a lock.
          reward_scale: the learner trains on reward_scale * r_t (V learns the scaled
            return); logged episode returns stay unscaled. Keeps value targets O(1) for
            envs with large rewards (e.g. 0.1 for Pendulum's [-16.3, 0] per step).
        """
        if not (isinstance(reward_scale, (int, float)) and reward_scale > 0 and math.isfinite(reward_scale)):
            raise ValueError(f"reward_scale must be a finite number > 0, got {reward_scale!r}")
        for name, value in (("entropy_coef", entropy_coef), ("value_coef", value_coef)):
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(gamma, (int, float)) and 0.0 <= gamma <= 1.0):
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        if not (isinstance(n_steps, int) and n_steps >= 1):
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        super().compile(optimizer=optimizer, jit_compile=False)
        self.entropy_coef = float(entropy_coef)
        self.value_coef = float(value_coef)
        self.gamma = float(gamma)
        self.n_steps = n_steps
        self.max_grad_norm = max_grad_norm
        self.hogwild = hogwild
        self.reward_scale = float(reward_scale)

    # ---------------------------------------------------------------- learning

    def train_step(self, data):
        """One A3C update from one worker's segment.

        The same loss serves every policy: the distribution for the action space
        (`Categorical` or `DiagGaussian`) supplies log pi(a_t|s_t) and H(pi(.|s_t)).

        Args:
          data: (observations [T+1, B, *obs], actions [T, B] (Discrete) or [T, B, D] (Box),
            rewards [T, B], terminated [T, B], truncated [T, B], valid [T, B]); see `workers.Worker`.

        Returns:
          the shared parameters after the update, for the worker's own copy.
        """
        observations, actions, rewards, terminated, truncated, valid = data
        horizon, batch = rewards.shape
        n = horizon * batch
        distribution = for_action_space(self._require_action_space())
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            params, values = self.network(
                tf.reshape(observations, [(horizon + 1) * batch, *observations.shape[2:]]), training=True
            )
            values = tf.reshape(values, [horizon + 1, batch])
            params = tf.reshape(params, [horizon + 1, batch, -1])[:horizon]
            # V(s_{t+1}) of the next observation bootstraps the return; it is a constant.
            returns = losses.n_step_returns(
                self.reward_scale * rewards, terminated, truncated, values[1:], self.gamma
            )
            pi = distribution.from_params(tf.reshape(params, [n, -1]))
            values, returns, mask = tf.reshape(values[:horizon], [n]), tf.reshape(returns, [n]), tf.reshape(valid, [n])
            terms = losses.actor_critic_loss(
                log_pi=pi.log_prob(tf.reshape(actions, [n, *actions.shape[2:]])),
                entropies=pi.entropy(),
                values=values,
                returns=returns,
                mask=mask,
                value_coef=self.value_coef,
                entropy_coef=self.entropy_coef,
            )
        grads = tape.gradient(terms["loss"], variables)
        grad_norm = tf.linalg.global_norm(grads)
        # A non-finite loss or gradient raises here, before the update touches the weights, the
        # optimizer or the metrics: every op after waits for the checks (graph ops are otherwise unordered).
        checks = [
            tf.debugging.check_numerics(terms["loss"], _NOT_FINITE + "loss"),
            tf.debugging.check_numerics(grad_norm, _NOT_FINITE + "gradient norm"),
        ]
        with tf.control_dependencies(checks):
            if self.max_grad_norm is not None:
                grads, _ = tf.clip_by_global_norm(grads, self.max_grad_norm, use_norm=grad_norm)
            self.optimizer.apply(grads, variables)
            explained_variance = losses.explained_variance(values, returns, mask)
            self.update_logs.update_state({**terms, "grad_norm": grad_norm, "explained_variance": explained_variance})
        return [tf.identity(v) for v in variables]

    def _make_train_function(self, batch: int, layout: SegmentLayout) -> Callable[[np.ndarray], list[np.ndarray]]:
        """Trace the train step once, on this thread, for packed segments of [n_steps + 1, batch].

        The returned function takes one packed segment (see `keras_a3c.segment`) and
        returns the shared parameters after the update as numpy arrays (views of one
        flat copy): one tensor crosses the TF boundary each way, which keeps the
        per-update Python overhead of the call small.
        """
        variables = self.network.trainable_variables

        def packed_step(segment):
            weights = self.train_step(layout.unpack(segment))
            return tf.concat([tf.reshape(w, [-1]) for w in weights], axis=0)

        function = tf.function(packed_step, input_signature=[layout.spec(self.n_steps, batch)], autograph=False)
        concrete = function.get_concrete_function()
        self._train_tf_function = function
        shapes = [tuple(v.shape) for v in variables]
        splits = np.cumsum([math.prod(shape) for shape in shapes])[:-1]

        def train(segment: np.ndarray) -> list[np.ndarray]:
            try:
                flat = concrete(tf.constant(segment)).numpy()
            except tf.errors.InvalidArgumentError as error:
                if _NOT_FINITE not in error.message:
                    raise
                what = error.message.split(_NOT_FINITE)[1].split(" :")[0]
                raise FloatingPointError(
                    f"the A3C {what} is not finite (rewards too large, or a diverging network?); the update "
                    "was not applied, the shared weights are those from before it"
                ) from error
            return [part.reshape(shape) for part, shape in zip(np.split(flat, splits), shapes, strict=True)]

        return train

    @property
    def train_trace_count(self) -> int:
        """How often the current train function was traced (stays 1 during `fit`)."""
        return self._train_tf_function.experimental_get_tracing_count()

    def _use_action_space(self, action_space: gym.Space) -> None:
        """Adopt the env's action space, or reject an env whose action space is not the agent's."""
        if self.action_space is None:
            self.action_space = action_space
        elif self.action_space != action_space:
            raise ValueError(
                f"the env's action space {action_space} differs from the agent's action space {self.action_space}"
            )

    def _require_action_space(self) -> gym.Space:
        if self.action_space is None:
            raise RuntimeError("the agent's action space is unknown: pass action_space to A3C, or call fit first")
        return self.action_space

    def _check_compiled(self) -> None:
        if not getattr(self, "compiled", False) or not hasattr(self, "n_steps"):
            raise RuntimeError("call compile() before fit()")

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
    ) -> keras.callbacks.History:
        """Train with `workers` asynchronous threads, each stepping its own batch of envs.

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

        Returns:
          a `keras.callbacks.History` whose rows are epochs of `steps_per_epoch` env steps,
          and whose `episodes` holds every finished training episode of the agent (see
          `RunState.episode_log`): `time` (training seconds, counted from each `fit` call
          and summed over calls), `env_steps` (global env steps taken when it ended),
          `return` and `length`.
        """
        start_time = time.perf_counter()  # "time" in the logs counts from here, set-up included
        self._check_compiled()
        for name, value, low in (
            ("total_steps", total_steps, 1),
            ("workers", workers, 1),
            ("envs_per_worker", envs_per_worker, 1),
            ("steps_per_epoch", steps_per_epoch, 1),
        ):
            if not (isinstance(value, (int, np.integer)) and value >= low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        obs_space, action_space = env_spaces(env)
        check_network(self.network, obs_space, action_space)
        self._use_action_space(action_space)
        sampler = ActionSampler(action_space)
        variables = self.network.trainable_variables
        if not self.optimizer.built:
            self.optimizer.build(variables)  # slots exist before any thread can race to create them
        layout = SegmentLayout(obs_space.shape, sampler.shape, sampler.dtype)
        train_function = self._make_train_function(envs_per_worker, layout)
        forward = numpy_forward(self.network)
        tf_params = None
        if forward is None:
            tf_params = tf.function(
                lambda obs: self.network(obs)[0],
                input_signature=[tf.TensorSpec([envs_per_worker, *obs_space.shape], tf.float32)],
            )
            tf_params.get_concrete_function()

        if seed is None:
            seed = int(self.rng.integers(2**31))
        else:
            self.rng = np.random.default_rng(seed)
        state = self.worker_state
        state.begin(workers, total_steps, start_time)
        train_lock = None if self.hogwild else threading.Lock()
        initial_weights = [v.numpy() for v in variables]
        threads: list[Worker] = []
        try:
            for i in range(workers):
                threads.append(
                    Worker(
                        worker_id=i,
                        env=make_vector_env(env, envs_per_worker),
                        policy=LocalPolicy(forward, tf_params, sampler),
                        train_function=train_function,
                        initial_weights=initial_weights,
                        state=state,
                        n_steps=self.n_steps,
                        layout=layout,
                        seed=seed + i * envs_per_worker,
                        train_lock=train_lock,
                    )
                )
        except BaseException:
            self._finish_fit(threads)
            raise

        first_step = state.env_steps
        callback_list = keras.callbacks.CallbackList(
            list(callbacks or []) + ([ProgressLogger(total_steps, verbose, first_step)] if verbose else []),
            add_history=True,
            model=self,
            verbose=verbose,
            epochs=math.ceil((first_step + total_steps) / steps_per_epoch),
            steps=None,
            total_steps=total_steps,
        )
        self.stop_training = False
        self.reset_metrics()
        self._train_lock = train_lock
        epoch, tick, epoch_open = first_step // steps_per_epoch, 0, True
        try:
            callback_list.on_train_begin()
        except BaseException:
            self._finish_fit(threads)
            raise
        callback_list.on_epoch_begin(epoch)

        def end_epochs(logs: dict[str, float], final: bool) -> bool:
            """End every epoch whose last step has been taken and, when `final`, the open
            partial one. Epochs that ended between two looks share that interval's metrics.
            Returns whether any epoch ended."""
            nonlocal epoch, epoch_open
            steps, ended = logs["env_steps"], False
            while epoch_open:
                full = steps >= (epoch + 1) * steps_per_epoch
                if not (full or (final and steps > epoch * steps_per_epoch)):
                    break
                callback_list.on_epoch_end(epoch, dict(logs))
                epoch_open, ended = False, True
                if self.stop_training or (final and steps <= (epoch + 1) * steps_per_epoch):
                    break
                epoch += 1
                callback_list.on_epoch_begin(epoch)
                epoch_open = True
            return ended

        try:
            for thread in threads:
                thread.start()
            while True:
                state.stop.wait(_TICK_SECONDS)
                if state.error is not None:
                    break
                finished = state.stop.is_set() or not any(t.is_alive() for t in threads)
                logs = self._logs(state)
                callback_list.on_train_batch_end(tick, logs)
                tick += 1
                if finished or self.stop_training:
                    break
                if end_epochs(logs, final=False):
                    self.reset_metrics()
                    state.reset_interval()
                if self.stop_training:
                    break
        finally:
            self._finish_fit(threads)
        if state.error is not None:
            raise state.error
        # Workers are joined: the final counters are exact.
        logs = self._logs(state)
        end_epochs(logs, final=True)
        self.history.episodes = state.episode_log()
        callback_list.on_train_end(logs)
        return self.history

    @contextlib.contextmanager
    def paused_updates(self):
        """Hold off the workers' updates (during `fit`, unless hogwild) while the block runs,
        so what it reads of the weights, the optimizer and the counters belongs together."""
        lock = self._train_lock
        with lock if lock is not None else contextlib.nullcontext():
            yield

    def save(self, path: str, overwrite: bool = False) -> str:
        """Save the whole training state to the directory `path`, atomically; returns its absolute path.

        Weights, optimizer variables, counters (env steps, updates, episodes, seconds), episode
        statistics, the agent's RNG state and the configuration: `keras_a3c.load(path)` rebuilds
        the agent and `fit` carries on from the saved global step. Safe to call from a callback
        during `fit`. An existing `path` is an error unless `overwrite`; see `keras_a3c.saving`.
        """
        return save_agent(self, path, overwrite=overwrite)

    def _finish_fit(self, threads: list[Worker]) -> None:
        """Stop and join every worker, close their envs, stop the fit's clock."""
        self.worker_state.stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join()
        for thread in threads:
            thread.env.close()
        self._train_lock = None
        self.worker_state.end()

    def _logs(self, state: RunState) -> dict[str, float]:
        logs = {name: float(value) for name, value in self.update_logs.result().items()}
        logs.update(state.snapshot())
        logs["updates"] = int(self.optimizer.iterations)
        return logs

    # ---------------------------------------------------------------- acting

    def _policy_outputs(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        params, values = self.network(observations, training=False)
        return np.asarray(params), np.reshape(np.asarray(values), [-1])

    def predict(self, observations, deterministic: bool = True, seed: int | None = None) -> np.ndarray:
        """Env actions for a batch of observations [B, *obs_shape] -> [B] int (Discrete) or
        [B, D] float32 (Box, clipped to the bounds); one observation -> one action.
        The most likely action (argmax, or the Gaussian mean) when `deterministic`, else sampled."""
        observations = np.asarray(observations, dtype=np.float32)
        obs_shape = tuple(self.network.inputs[0].shape[1:])
        single = observations.shape == obs_shape
        if single:
            observations = observations[None]
        if observations.shape[1:] != obs_shape:
            raise ValueError(f"observations must have shape [batch, {', '.join(map(str, obs_shape))}], "
                             f"got {observations.shape}")
        params, _ = self._policy_outputs(observations)
        # Without a known action space the params are read as logits (the Discrete default).
        sampler = ActionSampler(self.action_space or gym.spaces.Discrete(params.shape[1]))
        if deterministic:
            actions = sampler.mode(params)
        else:
            actions = sampler.sample(params, np.random.default_rng(seed))
        actions = sampler.to_env(actions)
        return actions[0] if single else actions

    def evaluate(
        self,
        env: EnvSpec,
        episodes: int = 100,
        deterministic: bool = True,
        num_envs: int = 16,
        seed: int = 10_000,
    ) -> tuple[float, float]:
        """Mean and standard deviation of the return over `episodes` episodes.

        Episodes run `num_envs` at a time; each env runs a fixed share of the
        episodes, so short episodes are not over-counted.
        """
        if not (isinstance(episodes, int) and episodes >= 1):
            raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
        obs_space, action_space = env_spaces(env)
        check_network(self.network, obs_space, action_space)
        self._use_action_space(action_space)
        sampler = ActionSampler(action_space)
        num_envs = min(num_envs, episodes)
        targets = np.array([(episodes + i) // num_envs for i in range(num_envs)])
        forward = numpy_forward(self.network)
        weights = [v.numpy() for v in self.network.trainable_variables]
        rng = np.random.default_rng(seed)
        vec = make_vector_env(env, num_envs)
        try:
            obs, _ = vec.reset(seed=seed)
            counts = np.zeros(num_envs, int)
            running = np.zeros(num_envs)
            reset_pending = np.zeros(num_envs, bool)
            returns: list[float] = []
            while (counts < targets).any():
                obs = np.asarray(obs, np.float32)
                params = forward(weights, obs)[0] if forward else self._policy_outputs(obs)[0]
                actions = sampler.mode(params) if deterministic else sampler.sample(params, rng)
                obs, reward, term, trunc, _ = vec.step(sampler.to_env(actions))
                running += np.where(reset_pending, 0.0, reward)
                reset_pending = term | trunc
                for i in np.flatnonzero(reset_pending):
                    if counts[i] < targets[i]:
                        returns.append(float(running[i]))
                        counts[i] += 1
                running[reset_pending] = 0.0
        finally:
            vec.close()
        return float(np.mean(returns)), float(np.std(returns))

    def export(self, path: str, format: str = "saved_model") -> None:
        """Write the policy to the new `path`: a TF SavedModel with the endpoints serve, sample,
        action_distribution and value (`format="saved_model"`), or the deterministic policy as a
        TFLite file (`format="tflite"`); see `keras_a3c.export` for the signatures."""
        export_policy(self.network, path, self.action_space, format)

