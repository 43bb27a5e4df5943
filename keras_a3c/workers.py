"""The acting side: worker threads that roll out n-step segments and send them to the learner.

Each `Worker` owns its vector env, its `LocalPolicy` (theta'), its rollout buffers and its
random generator; no other thread touches them. It counts its steps, episodes and updates
in the shared `TrainingState` and calls the learner's train function under the learner's
lock (none when hogwild); see docs/architecture.md for who owns which lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from gymnasium.vector import VectorEnv

from keras_a3c.acting import LocalPolicy
from keras_a3c.envs import check_finite
from keras_a3c.normalization import RewardNormalizer
from keras_a3c.observations import ObservationCodec
from keras_a3c.recurrent import begin_episodes, zero_state
from keras_a3c.segment import SegmentLayout
from keras_a3c.training_state import TrainingState


class Worker(threading.Thread):
    """An A3C actor-learner: acts in its own batch of envs for `n_steps`, then
    sends the segment to `train_function`, which updates the shared model and
    returns the new parameters for the worker's own copy.

    The segment (T = n_steps, B = envs in the worker's vector env) is one packed float32
    array [T+1, B, F] (see `keras_a3c.segment`): the float32 observation row, the actions taken
    (Discrete indices, or the unclipped Gaussian samples of a Box policy; the env is stepped with
    them clipped to its bounds), rewards, terminated / truncated / valid flags; then one array per
    observation row of another dtype (see `keras_a3c.observations`); row T holds the bootstrap
    observation.
    """

    def __init__(
        self,
        worker_id: int,
        env: VectorEnv,
        policy: LocalPolicy,
        train_function: Callable[[list[np.ndarray]], list[np.ndarray]],
        initial_weights: list,
        state: TrainingState,
        n_steps: int,
        layout: SegmentLayout,
        codec: ObservationCodec,
        seed: int,
        train_lock: threading.Lock | None,
        reward_normalizer: RewardNormalizer | None = None,
        clip_raw_rewards: float | None = None,
    ):
        super().__init__(name=f"a3c-worker-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.env = env
        self.policy = policy
        self.train_function = train_function
        self.state = state
        self.n_steps = n_steps
        self.layout = layout
        self.codec = codec
        self.seed = seed
        self.train_lock = train_lock
        self.reward_normalizer = reward_normalizer
        self.clip_raw_rewards = clip_raw_rewards
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
        # Observations travel as rows [B, F_g], one per storage dtype (keras_a3c.observations).
        to_rows, float_rows = self.codec.rows, self.codec.float_rows
        raw, _ = env.reset(seed=self.seed)
        obs = to_rows(raw)
        segment = layout.empty(T, B)
        # Views into the segment, one per column group.
        observations = layout.observation_views(segment)
        packed = segment[0]
        actions = packed[:T, :, layout.action].reshape(T, B, *layout.action_shape)
        rewards, terminated, truncated, valid = (
            packed[:T, :, c] for c in (layout.reward, layout.terminated, layout.truncated, layout.valid)
        )
        behaviour = packed[:T, :, layout.behaviour_params] if layout.params_size else None
        episode_return = np.zeros(B, np.float64)
        episode_length = np.zeros(B, np.int64)
        reset_pending = np.zeros(B, bool)  # NEXT_STEP autoreset: this step only resets these envs
        normalizer, clip = self.reward_normalizer, self.clip_raw_rewards
        discounted = np.zeros(B)  # with reward normalisation: G_t = gamma G_{t-1} + r_t of each env's episode
        discounted_log = np.zeros((T, B))
        vector_steps = 0
        state = zero_state(layout.state_sizes, B)  # a recurrent network's state per env; [] for feedforward
        initial_state = segment[-1] if layout.state_size else None
        for g in float_rows:
            check_finite("observation", obs[g], f"{where}, reset")
        while not self.state.stop.is_set():
            if initial_state is not None:
                np.concatenate(state, axis=1, out=initial_state)
            for t in range(T):
                for row, part in zip(observations, obs, strict=True):
                    row[t] = part
                action, params, state = self.policy.sample(obs, self.rng, where, state)
                if behaviour is not None:
                    behaviour[t] = params
                raw, reward, term, trunc, _ = env.step(sampler.to_env(action))
                obs = to_rows(raw)
                vector_steps += 1
                step_where = f"{where}, vector-env step {vector_steps} (envs 0..{B - 1})"
                for g in float_rows:
                    check_finite("observation", obs[g], step_where)
                check_finite("reward", reward, step_where)
                steps = B - int(np.count_nonzero(reset_pending))
                episode_return += reward  # the log keeps the raw rewards, the learner sees clipped ones
                if clip is not None:
                    reward = np.clip(reward, -clip, clip)
                actions[t], rewards[t], terminated[t], truncated[t] = action, reward, term, trunc
                valid[t] = ~reset_pending
                episode_length += ~reset_pending
                if normalizer is not None:
                    discounted = np.where(reset_pending, 0.0, normalizer.gamma * discounted + reward)
                    discounted_log[t] = discounted
                if state and reset_pending.any():  # this step began new episodes: from the zero state
                    state = begin_episodes(state, reset_pending)
                reset_pending = done = term | trunc
                self.state.add_steps(self.worker_id, steps, episode_return[done], episode_length[done])
                episode_return[done] = 0.0
                episode_length[done] = 0
            for row, part in zip(observations, obs, strict=True):
                row[T] = part
            if normalizer is not None:  # the learner sees the normalised rewards, the logs the raw ones
                normalizer.normalize(rewards, normalizer.update(discounted_log[valid > 0.5]))
            if self.train_lock is None:
                self._update(segment)
            else:
                with self.train_lock:
                    self._update(segment)

    def _update(self, segment: list[np.ndarray]) -> None:
        """Apply one update to the shared model, then refresh theta' from it."""
        weights = self.train_function(segment)
        self.version = self.state.add_update(self.worker_id, self.version)
        self.policy.sync(weights)
