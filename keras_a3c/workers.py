"""The acting side: worker threads that roll out n-step segments and send them to the learner.

Who owns what (all threads run in one process; tests/test_faults.py checks the counters
are exact and the callbacks run on one thread):
  - `RunState` is shared. Its counters and episode statistics change only under
    `RunState.lock`; `stop` is a `threading.Event`; `error` is written once, under the lock.
    `begin`, `end` and `state_dict` are called by the main thread (`A3C.fit`, `A3C.save`).
  - Each `Worker` owns its vector env, its `LocalPolicy` (theta'), its rollout buffers
    and its random generator; no other thread touches them.
  - The shared model and optimizer are written only inside `train_function`, which
    workers call one at a time under `train_lock` (or concurrently, Hogwild-style,
    when no lock is given). The main thread reads them under the same lock when it saves
    (`A3C.paused_updates`); lock order: `train_lock`, then `RunState.lock`.
  - Keras callbacks run on the main thread only (see `A3C.fit`); the metrics they read
    (`keras_a3c.metrics.RunningMeans`) are updated inside the train function.
"""

from __future__ import annotations

import array
import collections
import threading
import time
from collections.abc import Callable

import numpy as np
from gymnasium.vector import VectorEnv

from keras_a3c.acting import LocalPolicy
from keras_a3c.envs import check_finite
from keras_a3c.segment import SegmentLayout

EPISODE_FIELDS = ("time", "env_steps", "return", "length")
# 32 bytes per logged episode: the log stops growing at 32 MB, however long the run.
EPISODE_LOG_LIMIT = 1_000_000


class RunState:
    """Counters, episode statistics and the stop signal shared by the workers of an agent.

    One `RunState` lives as long as its agent, so the counters run on across `fit` calls
    and across save / load (`state_dict` / `from_state_dict`): env steps, updates,
    episodes, the recent returns, the episode log and the training seconds are global.
    `begin` and `end` bracket one fit: the stop signal, the error slot, the per-worker
    counts and the step at which to stop belong to the fit.

    Env steps are counted as they are taken (as SB3 counts `num_timesteps`), so a
    finished episode is stamped with the global env-step count and the training seconds
    (summed over fits) at which it ended. Every finished episode is kept, in the order
    they finished, as 8 bytes per field, up to EPISODE_LOG_LIMIT episodes (see `episode_log`).
    """

    def __init__(self, window: int = 100):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.recent_returns: collections.deque[float] = collections.deque(maxlen=window)
        self.recent_lengths: collections.deque[int] = collections.deque(maxlen=window)
        self._log = {key: array.array("d") for key in EPISODE_FIELDS}
        self.seconds = 0.0  # training seconds of the fits that have ended
        self.start_time: float | None = None  # perf_counter() at the start of the running fit
        self.fit_seconds = 0.0  # length of the last fit that ended
        self.fit_start_steps = 0
        self.stop_at_steps = 0
        self.worker_steps: list[int] = []
        self.worker_updates: list[int] = []
        self._lag_sum = self._lag_count = 0  # policy lag since the last `reset_interval`

    def begin(self, num_workers: int, total_steps: int, start_time: float | None = None) -> None:
        """Start a fit of `total_steps` more env steps with `num_workers` workers; `start_time`
        (a `time.perf_counter()` value, default now) is when the fit's clock started."""
        with self.lock:
            self.stop = threading.Event()
            self.error = None
            self.start_time = time.perf_counter() if start_time is None else start_time
            self.fit_start_steps = self.env_steps
            self.stop_at_steps = self.env_steps + total_steps
            self.worker_steps = [0] * num_workers
            self.worker_updates = [0] * num_workers
            self._lag_sum = self._lag_count = 0

    def end(self) -> None:
        """End the fit (its workers have been joined): its seconds join the total."""
        with self.lock:
            if self.start_time is not None:
                self.fit_seconds = time.perf_counter() - self.start_time
                self.seconds += self.fit_seconds
                self.start_time = None

    def elapsed(self) -> float:
        """Training seconds, summed over fits, up to now."""
        running = 0.0 if self.start_time is None else time.perf_counter() - self.start_time
        return self.seconds + running

    def add_steps(self, worker_id: int, steps: int, returns: np.ndarray, lengths: np.ndarray) -> None:
        """Count `steps` env transitions of one vector step, and the episodes they finished."""
        now = self.elapsed()
        with self.lock:
            self.env_steps += steps
            self.worker_steps[worker_id] += steps
            if len(returns):
                self.episodes += len(returns)
                self.recent_returns.extend(returns.tolist())
                self.recent_lengths.extend(lengths.tolist())
            if len(returns) and len(self._log["return"]) < EPISODE_LOG_LIMIT:
                self._log["time"].extend([now] * len(returns))
                self._log["env_steps"].extend([self.env_steps] * len(returns))
                self._log["return"].extend(returns.tolist())
                self._log["length"].extend(lengths.tolist())
            if self.env_steps >= self.stop_at_steps:
                self.stop.set()

    def add_update(self, worker_id: int, read_version: int) -> int:
        """Count one applied update by a worker whose parameters were read after
        `read_version` updates; returns the update count after this one. The policy
        lag is the number of updates other workers applied in between."""
        with self.lock:
            self._lag_sum += self.updates - read_version
            self._lag_count += 1
            self.updates += 1
            self.worker_updates[worker_id] += 1
            return self.updates

    def reset_interval(self) -> None:
        """Start a new averaging interval for `policy_lag` (at each epoch end)."""
        with self.lock:
            self._lag_sum = self._lag_count = 0

    def fail(self, error: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
        self.stop.set()

    def snapshot(self) -> dict[str, float]:
        """Episode and step statistics; NaN returns until the first episode ends.
        `steps_per_second` is over the running (or last) fit alone."""
        with self.lock:
            returns, lengths = list(self.recent_returns), list(self.recent_lengths)
            steps, episodes = self.env_steps, self.episodes
            fit_steps = steps - self.fit_start_steps
            fit_seconds = self.fit_seconds if self.start_time is None else time.perf_counter() - self.start_time
            lag = self._lag_sum / self._lag_count if self._lag_count else float("nan")
        return {
            "episode_return": float(np.mean(returns)) if returns else float("nan"),
            "episode_length": float(np.mean(lengths)) if lengths else float("nan"),
            "episodes": episodes,
            "env_steps": steps,
            "time": self.elapsed(),
            "steps_per_second": fit_steps / max(fit_seconds, 1e-9),
            "policy_lag": lag,
        }

    def episode_log(self) -> dict[str, np.ndarray]:
        """The first EPISODE_LOG_LIMIT finished episodes, in finishing order: `time` (training seconds),
        `env_steps` (global count when it ended), `return`, `length`; each a float64 array [episodes]."""
        with self.lock:
            return {key: np.array(values) for key, values in self._log.items()}

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """What a save keeps: (JSON-able counters, arrays: the episode log and the recent episodes)."""
        with self.lock:
            counters = {
                "env_steps": self.env_steps,
                "updates": self.updates,
                "episodes": self.episodes,
                "seconds": self.elapsed(),
                "window": self.recent_returns.maxlen,
            }
            arrays = {f"log_{key}": np.array(values) for key, values in self._log.items()}
            arrays["recent_returns"] = np.array(self.recent_returns, np.float64)
            arrays["recent_lengths"] = np.array(self.recent_lengths, np.int64)
        return counters, arrays

    @classmethod
    def from_state_dict(cls, counters: dict, arrays: dict[str, np.ndarray]) -> RunState:
        """The inverse of `state_dict`: a RunState that carries on from the saved counters."""
        state = cls(window=int(counters["window"]))
        state.env_steps, state.updates = int(counters["env_steps"]), int(counters["updates"])
        state.episodes, state.seconds = int(counters["episodes"]), float(counters["seconds"])
        state.recent_returns.extend(arrays["recent_returns"].tolist())
        state.recent_lengths.extend(arrays["recent_lengths"].tolist())
        for key in EPISODE_FIELDS:
            state._log[key].extend(arrays[f"log_{key}"].tolist())
        return state


class Worker(threading.Thread):
    """An A3C actor-learner: acts in its own batch of envs for `n_steps`, then
    sends the segment to `train_function`, which updates the shared model and
    returns the new parameters for the worker's own copy.

    The segment (T = n_steps, B = envs in the worker's vector env) is one packed float32
    array [T+1, B, F] (see `keras_a3c.segment`): observations, the actions taken (Discrete
    indices, or the unclipped Gaussian samples of a Box policy; the env is stepped with them
    clipped to its bounds), rewards, terminated / truncated / valid flags; row T holds the
    bootstrap observation.
    """

    def __init__(
        self,
        worker_id: int,
        env: VectorEnv,
        policy: LocalPolicy,
        train_function: Callable[[np.ndarray], list[np.ndarray]],
        initial_weights: list,
        state: RunState,
        n_steps: int,
        layout: SegmentLayout,
        seed: int,
        train_lock: threading.Lock | None,
    ):
        super().__init__(name=f"a3c-worker-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.env = env
        self.policy = policy
        self.train_function = train_function
        self.state = state
        self.n_steps = n_steps
        self.layout = layout
        self.seed = seed
        self.train_lock = train_lock
        self.rng = np.random.default_rng(seed)
        policy.sync(initial_weights)
        self.version = state.updates  # shared updates applied before theta' was last read

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # noqa: BLE001 - every failure must reach fit()
            error.add_note(f"raised in keras_a3c worker {self.worker_id}")
            self.state.fail(error)

    def _run(self) -> None:
        env, T, layout, sampler = self.env, self.n_steps, self.layout, self.policy.sampler
        B = env.num_envs
        where = f"worker {self.worker_id}"
        obs, _ = env.reset(seed=self.seed)
        segment = layout.empty(T, B)
        # Views into the packed segment, one per column group.
        observations = segment[:, :, layout.observation]
        actions = segment[:T, :, layout.action].reshape(T, B, *layout.action_shape)
        rewards, terminated, truncated, valid = (
            segment[:T, :, c] for c in (layout.reward, layout.terminated, layout.truncated, layout.valid)
        )
        episode_return = np.zeros(B, np.float64)
        episode_length = np.zeros(B, np.int64)
        reset_pending = np.zeros(B, bool)  # NEXT_STEP autoreset: this step only resets these envs
        vector_steps = 0
        check_finite("observation", obs, f"{where}, reset")
        while not self.state.stop.is_set():
            for t in range(T):
                observations[t] = obs.reshape(B, -1)
                action = self.policy.sample(obs, self.rng)
                obs, reward, term, trunc, _ = env.step(sampler.to_env(action))
                vector_steps += 1
                step_where = f"{where}, vector-env step {vector_steps} (envs 0..{B - 1})"
                check_finite("observation", obs, step_where)
                check_finite("reward", reward, step_where)
                steps = B - int(np.count_nonzero(reset_pending))
                actions[t], rewards[t], terminated[t], truncated[t] = action, reward, term, trunc
                valid[t] = ~reset_pending
                episode_return += reward
                episode_length += ~reset_pending
                reset_pending = done = term | trunc
                self.state.add_steps(self.worker_id, steps, episode_return[done], episode_length[done])
                episode_return[done] = 0.0
                episode_length[done] = 0
            observations[T] = obs.reshape(B, -1)
            if self.train_lock is None:
                self._update(segment)
            else:
                with self.train_lock:
                    self._update(segment)

    def _update(self, segment: np.ndarray) -> None:
        """Apply one update to the shared model, then refresh theta' from it."""
        weights = self.train_function(segment)
        self.version = self.state.add_update(self.worker_id, self.version)
        self.policy.sync(weights)
