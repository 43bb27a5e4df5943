"""`TrainingState`: what an agent has trained so far (env steps, updates, episodes, seconds,
the recent returns and the episode log), shared by the worker threads of a fit.

Its counters and episode statistics change only under `TrainingState.lock`; `stop` is a
`threading.Event`; `error` is written once, under the lock. `begin`, `end` and `state_dict`
are called by the main thread (the `Trainer`, `A3C.get_train_state`).
"""

from __future__ import annotations

import array
import collections
import threading
import time

import numpy as np

EPISODE_FIELDS = ("time", "env_steps", "return", "length")
# 32 bytes per logged episode: the log stops growing at 32 MB, however long the run.
EPISODE_LOG_LIMIT = 1_000_000


class TrainingState:
    """An agent's training progress: global counters, episode statistics and, during a fit, the stop signal.

    One `TrainingState` lives as long as its agent, so the counters run on across `fit` calls
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
    def from_state_dict(cls, counters: dict, arrays: dict[str, np.ndarray]) -> TrainingState:
        """The inverse of `state_dict`: a TrainingState that carries on from the saved counters."""
        state = cls(window=int(counters["window"]))
        state.env_steps, state.updates = int(counters["env_steps"]), int(counters["updates"])
        state.episodes, state.seconds = int(counters["episodes"]), float(counters["seconds"])
        state.recent_returns.extend(arrays["recent_returns"].tolist())
        state.recent_lengths.extend(arrays["recent_lengths"].tolist())
        for key in EPISODE_FIELDS:
            state._log[key].extend(arrays[f"log_{key}"].tolist())
        return state
