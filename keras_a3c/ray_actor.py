"""The process side of the Ray backend (`keras_a3c.ray_backend`): `ActorLearner`, one Ray actor that runs
A3C worker threads on its own replica of the network and ships their gradients to the learner.

An actor's workers are the thread backend's `Worker`s: each steps its own vector env with theta' (the
replica's weights), but instead of applying its segment's update it hands the segment to `ActorLearner`,
which computes the segment's gradients at theta' and adds them to the message being gathered (the mean
over its segments). The learner in the driver asks each actor for one message at a time
(`ActorLearner.exchange`), applies it to the shared model and optimizer, and sends the new weights with
its next request; the workers adopt them at their next segment boundary, so they never wait for the
round trip. This module imports Ray only inside the actor's process (for its restart flag).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import traceback
import uuid
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from keras_a3c.envs import EnvSpec
from keras_a3c.learner import Gradients
from keras_a3c.normalization import RewardNormalizer, merge_samples
from keras_a3c.training_state import TrainingState

# How often a waiting `exchange` looks for a worker's failure.
POLL_SECONDS = 0.05


class ActorBuildError(RuntimeError):
    """Building an `ActorLearner` failed; the message names the failure and holds its traceback. Raised by
    the actor's first `exchange` rather than by `__init__`: Ray leaves an actor whose creation task raised to
    exit on its own, through Python's finalization of TensorFlow (~2 s on an idle machine, ~1 min with both
    cores busy), while a live actor ends at once when the learner kills it."""


@dataclasses.dataclass
class ActorSpec:
    """What an `ActorLearner` is built from (sent once; Ray builds a restarted actor from it again).

    Attributes:
      network: the network as `keras.saving.serialize_keras_object` gives it.
      weights: the network's weights (`acting.weights_of`) when the fit started.
      config: the agent's `A3CConfig.to_dict()`.
      observation_space, action_space: the env's.
      env: the gymnasium id or env factory (pickled by Ray).
      registration: the gymnasium `EnvSpec` of an id `env`, registered in the actor's process if it is not
        there (ids a module registers on import in the caller: examples/memory_env.py's, MinAtar's, ...).
      worker_ids: the global ids of this actor's workers (worker i seeds its envs with seed + i * envs_per_worker).
      envs_per_worker: envs each worker steps as one batch.
      seed: the fit's seed.
      segments_per_message: the fewest segments whose gradients one message carries.
      threads: TensorFlow's and BLAS's threads in this process.
    """

    network: dict[str, Any]
    weights: list[np.ndarray]
    config: dict[str, Any]
    observation_space: gym.Space
    action_space: gym.Space
    env: EnvSpec
    worker_ids: list[int]
    envs_per_worker: int
    seed: int
    segments_per_message: int
    threads: int = 1
    registration: gym.envs.registration.EnvSpec | None = None


@dataclasses.dataclass
class Message:
    """One answer of `ActorLearner.exchange`: what the actor's workers learned and did since the last one.

    Attributes:
      gradients: the mean gradients of the segments (and their logs and observation samples).
      version: the learner's update count when the weights the oldest segment was acted and differentiated
        with were sent (the policy lag of the message is the updates applied since).
      steps: env steps taken.
      returns, lengths: the (raw) returns and lengths of the episodes that ended, float64 / int64 [episodes].
      reward_moments: with reward normalisation, (mean, var, count) of the discounted returns seen.
      incarnation: this actor process's token, new each time Ray (re)starts it: a change tells the learner
        the actor died and was restarted between two calls (a call made while Ray restarts it waits for the
        new process instead of failing).
    """

    gradients: Gradients
    version: int
    steps: int
    returns: np.ndarray
    lengths: np.ndarray
    reward_moments: tuple[float, float, float] | None
    incarnation: str


class _Tally(TrainingState):
    """The actor's `TrainingState`: counts as one does, and keeps what the next `Message` reports."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0
        self.returns: list[float] = []
        self.lengths: list[int] = []

    def add_steps(self, worker_id: int, steps: int, returns: np.ndarray, lengths: np.ndarray) -> None:
        super().add_steps(worker_id, steps, returns, lengths)
        with self.lock:
            self.steps += steps
            self.returns.extend(returns.tolist())
            self.lengths.extend(lengths.tolist())

    def take(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(steps, returns, lengths) since the last `take`."""
        with self.lock:
            taken = self.steps, np.array(self.returns, np.float64), np.array(self.lengths, np.int64)
            self.steps, self.returns, self.lengths = 0, [], []
        return taken


class _ShippingRewardNormalizer(RewardNormalizer):
    """A replica of the learner's reward statistics that also keeps the moments merged since the last
    `take`, for the learner to merge into the shared ones."""

    def __init__(self, gamma: float, clip: float | None):
        super().__init__(gamma, clip)
        self.fresh = (0.0, 0.0, 0.0)

    def merge(self, mean: float, var: float, count: float) -> None:
        super().merge(mean, var, count)
        with self.lock:
            self.fresh = merge_samples(self.fresh, (mean, var, count))

    def take(self) -> tuple[float, float, float]:
        with self.lock:
            taken, self.fresh = self.fresh, (0.0, 0.0, 0.0)
        return taken


class ActorLearner:
    """A Ray actor's A3C workers (one thread each, as `keras_a3c.workers.Worker`) on a replica of the
    network; see the module docstring. Built on the actor's process from an `ActorSpec`; its workers start
    with the first `exchange`."""

    def __init__(self, spec: ActorSpec):
        self.build_error: str | None = None
        try:
            self._build(spec)
        except Exception as error:  # reported by `exchange`: see ActorBuildError
            self.build_error = (f"{type(error).__name__}: {error}\n\nThe actor's traceback:\n"
                                + "".join(traceback.format_exception(error)))

    def _build(self, spec: ActorSpec) -> None:
        import keras
        import tensorflow as tf
        from threadpoolctl import threadpool_limits

        from keras_a3c.acting import ActionSampler, LocalPolicy, compiled_params, numpy_forward, weights_of
        from keras_a3c.config import A3CConfig
        from keras_a3c.envs import make_vector_env
        from keras_a3c.learner import UPDATE_LOGS, Learner, splitter
        from keras_a3c.metrics import RunningMeans
        from keras_a3c.observations import ObservationCodec
        from keras_a3c.workers import Worker

        self.incarnation = uuid.uuid4().hex
        # One process per core is the parallelism: TensorFlow's and BLAS's own threads would only fight it.
        tf.config.threading.set_intra_op_parallelism_threads(spec.threads)
        tf.config.threading.set_inter_op_parallelism_threads(spec.threads)
        self._blas = threadpool_limits(limits=spec.threads, user_api="blas")
        if isinstance(spec.env, str) and spec.env not in gym.registry and spec.registration is not None:
            gym.registry[spec.env] = spec.registration
        # The envs first: an env that cannot be made here fails the fit before any TensorFlow tracing.
        batch = spec.envs_per_worker
        spaces = (spec.observation_space, spec.action_space)
        envs = [make_vector_env(spec.env, batch, spaces) for _ in spec.worker_ids]
        network = keras.saving.deserialize_keras_object(spec.network)
        network.set_weights(spec.weights)
        self.network = network
        config = A3CConfig.from_dict(spec.config)
        sampler = ActionSampler(spec.action_space)
        codec = ObservationCodec.for_space(spec.observation_space, network)
        learner = Learner(network, None, config, RunningMeans(UPDATE_LOGS))
        layout = learner.segment_layout(codec, sampler)
        self._learner = learner
        self._gradients = learner.compile_gradients(layout, batch, spec.action_space, codec)
        forward = numpy_forward(network)
        tf_params = None if forward is not None else compiled_params(network, codec, batch)
        self.normalizer = _ShippingRewardNormalizer(config.gamma, config.reward_clip) if config.normalize_rewards \
            else None
        self.tally = _Tally()
        self.tally.begin(max(spec.worker_ids) + 1, 2**62)
        self.segments_per_message = spec.segments_per_message
        self.weights = weights_of(network)
        self._split = splitter(network.weights)
        self.version = 0
        self.lock = threading.Lock()  # the replica's weights, the message being gathered, the inbox
        self.ready = threading.Condition(self.lock)
        self.message: Gradients | None = None
        self.message_version = 0
        self.inbox: tuple[np.ndarray, int, int, tuple[float, float, float] | None] | None = None
        self.started = False
        seed = spec.seed
        if _restarted():  # a replacement of an actor that died: new random streams, not the dead one's again
            seed += int.from_bytes(os.urandom(3), "little") * len(spec.worker_ids) * batch
        self.workers = [
            Worker(worker_id=i, env=env,
                   policy=LocalPolicy(forward, tf_params, sampler, codec),
                   train_function=self._train, initial_weights=self.weights, state=self.tally, n_steps=config.n_steps,
                   layout=layout, codec=codec, seed=seed + i * batch, train_lock=None,
                   reward_normalizer=self.normalizer, clip_raw_rewards=config.clip_raw_rewards)
            for i, env in zip(spec.worker_ids, envs, strict=True)
        ]

    def exchange(self, weights: np.ndarray, version: int, optimizer_updates: int,
                 reward_moments: tuple[float, float, float] | None) -> Message:
        """Take the learner's weights (one flat float32 vector, after `version` updates of this fit), its
        optimizer's update count (what a decaying entropy bonus counts) and reward statistics for the workers
        to adopt at their next segment boundary (at once, the first time, and start them);
        return the next message once it holds `segments_per_message` segments. A worker's failure raises
        here, which ends the fit, as does a failure to build this actor (`ActorBuildError`)."""
        if self.build_error is not None:
            raise ActorBuildError(self.build_error)
        with self.lock:
            self.inbox = (weights, version, optimizer_updates, reward_moments)
            if not self.started:
                self._adopt()
                for worker in self.workers:
                    worker.start()
                self.started = True
            while self.message is None or self.message.segments < self.segments_per_message:
                if self.tally.error is not None:
                    raise self.tally.error
                self.ready.wait(POLL_SECONDS)
            gradients, self.message = self.message, None
            self.ready.notify_all()
            steps, returns, lengths = self.tally.take()
            reward = self.normalizer.take() if self.normalizer is not None else None
            return Message(gradients, self.message_version, steps, returns, lengths, reward, self.incarnation)

    def _train(self, segment: list[np.ndarray]) -> list[np.ndarray]:
        """A worker's update: the segment's gradients at theta' join the message; returns theta' (new
        weights, if the learner sent some since)."""
        with self.lock:
            gradients = self._gradients(segment)
            if self.message is None:
                self.message, self.message_version = gradients, self.version
            else:
                self.message.add(gradients)
            if self.message.segments >= self.segments_per_message:
                self.ready.notify_all()
                # A full message waits for the learner to take it: the workers do not run ahead of the
                # learner, which would only add segments computed with ever older weights.
                while self.message is not None and not self.tally.stop.is_set():
                    self.ready.wait(POLL_SECONDS)
            if self.inbox is not None:
                self._adopt()
            return self.weights

    def _adopt(self) -> None:
        """theta' = the weights in the inbox (under `lock`)."""
        flat, self.version, optimizer_updates, reward_moments = self.inbox
        self.inbox = None
        self._learner.set_updates(optimizer_updates)
        self.weights = self._split(flat)
        for variable, value in zip(self.network.weights, self.weights, strict=True):
            variable.assign(value)
        if self.normalizer is not None and reward_moments is not None:
            self.normalizer.set_moments(*reward_moments)


def _restarted() -> bool:
    """Whether this actor is Ray's replacement of one that died."""
    import ray

    with warnings.catch_warnings():  # Ray's own property calls one of its deprecated ones
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
