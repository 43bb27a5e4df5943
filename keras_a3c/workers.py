"""The acting side: worker threads that roll out n-step segments and send them to the learner.

Who owns what (all threads run in one process):
  - `RunState` is shared. Its counters and episode statistics change only under
    `RunState.lock`; `stop` is a `threading.Event`; `error` is written once, under the lock.
  - Each `Worker` owns its vector env, its `LocalPolicy` (theta'), its rollout buffers
    and its random generator; no other thread touches them.
  - The shared model and optimizer are touched only inside `train_function`, which
    workers call one at a time under `train_lock` (or concurrently, Hogwild-style,
    when no lock is given).
  - Keras callbacks run on the main thread only (see `A3C.fit`).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import numpy as np
from gymnasium.vector import VectorEnv

from keras_a3c.acting import LocalPolicy, sample_actions
from keras_a3c.envs import check_finite


class RunState:
    """Counters, episode statistics and the stop signal shared by the workers of one `fit`."""

    def __init__(self, num_workers: int, total_steps: int, window: int = 100):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.total_steps = total_steps
        self.env_steps = 0
        self.worker_steps = [0] * num_workers
        self.worker_updates = [0] * num_workers
        self.episodes = 0
        self.recent_returns: collections.deque[float] = collections.deque(maxlen=window)
        self.recent_lengths: collections.deque[int] = collections.deque(maxlen=window)
        self.error: BaseException | None = None
        self.start_time = time.perf_counter()

    def add_segment(self, worker_id: int, steps: int) -> None:
        """Count one applied update and the `steps` env transitions it learned from."""
        with self.lock:
            self.env_steps += steps
            self.worker_steps[worker_id] += steps
            self.worker_updates[worker_id] += 1
            if self.env_steps >= self.total_steps:
                self.stop.set()

    def add_episodes(self, returns: np.ndarray, lengths: np.ndarray) -> None:
        with self.lock:
            self.episodes += len(returns)
            self.recent_returns.extend(returns.tolist())
            self.recent_lengths.extend(lengths.tolist())

    def fail(self, error: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
        self.stop.set()

    def snapshot(self) -> dict[str, float]:
        """Episode and step statistics; NaN returns until the first episode ends."""
        with self.lock:
            returns, lengths = list(self.recent_returns), list(self.recent_lengths)
            steps, episodes = self.env_steps, self.episodes
        elapsed = time.perf_counter() - self.start_time
        return {
            "episode_return": float(np.mean(returns)) if returns else float("nan"),
            "episode_length": float(np.mean(lengths)) if lengths else float("nan"),
            "episodes": episodes,
            "env_steps": steps,
            "steps_per_second": steps / max(elapsed, 1e-9),
        }


class Worker(threading.Thread):
    """An A3C actor-learner: acts in its own batch of envs for `n_steps`, then
    sends the segment to `train_function`, which updates the shared model and
    returns the new parameters for the worker's own copy.

    Segment layout (T = n_steps, B = envs in the worker's vector env):
      observations [T+1, B, *obs_shape] float32 (the last row is the bootstrap observation),
      actions [T, B] int32, rewards [T, B] float32, terminated / truncated / valid [T, B] bool.
    """

    def __init__(
        self,
        worker_id: int,
        env: VectorEnv,
        policy: LocalPolicy,
        train_function: Callable[..., list],
        initial_weights: list,
        state: RunState,
        n_steps: int,
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
        self.seed = seed
        self.train_lock = train_lock
        self.rng = np.random.default_rng(seed)
        policy.sync(initial_weights)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # noqa: BLE001 - every failure must reach fit()
            error.add_note(f"raised in keras_a3c worker {self.worker_id}")
            self.state.fail(error)

    def _run(self) -> None:
        env, T = self.env, self.n_steps
        B = env.num_envs
        where = f"worker {self.worker_id}"
        obs, _ = env.reset(seed=self.seed)
        obs_buf = np.zeros((T + 1, B, *obs.shape[1:]), np.float32)
        actions = np.zeros((T, B), np.int32)
        rewards = np.zeros((T, B), np.float32)
        terminated = np.zeros((T, B), bool)
        truncated = np.zeros((T, B), bool)
        valid = np.zeros((T, B), bool)
        episode_return = np.zeros(B, np.float64)
        episode_length = np.zeros(B, np.int64)
        reset_pending = np.zeros(B, bool)
        vector_steps = 0
        check_finite("observation", obs, f"{where}, reset")
        while not self.state.stop.is_set():
            for t in range(T):
                obs_buf[t] = obs
                action = sample_actions(self.policy.logits(obs_buf[t]), self.rng)
                obs, reward, term, trunc, _ = env.step(action)
                vector_steps += 1
                step_where = f"{where}, vector-env step {vector_steps} (envs 0..{B - 1})"
                check_finite("observation", obs, step_where)
                check_finite("reward", reward, step_where)
                actions[t], rewards[t], terminated[t], truncated[t] = action, reward, term, trunc
                valid[t] = ~reset_pending
                episode_return += reward
                episode_length += valid[t]
                reset_pending = term | trunc
                if reset_pending.any():
                    self.state.add_episodes(episode_return[reset_pending], episode_length[reset_pending])
                    episode_return[reset_pending] = 0.0
                    episode_length[reset_pending] = 0
            obs_buf[T] = obs
            if self.train_lock is None:
                weights = self.train_function((obs_buf, actions, rewards, terminated, truncated, valid))
            else:
                with self.train_lock:
                    weights = self.train_function((obs_buf, actions, rewards, terminated, truncated, valid))
            self.policy.sync(weights)
            self.state.add_segment(self.worker_id, int(valid.sum()))
