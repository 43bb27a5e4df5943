"""The Ray backend of `A3C.fit`: actor-learners in Ray actor processes, on one machine or a cluster.

    agent.fit("LunarLander-v3", total_steps=3_000_000, workers=8,
              backend=keras_a3c.RayBackend(address="auto", actors=4))

`RayBackend` says where and how (the cluster, how many actor processes, how many segments a message
carries); `RayTrainer` is the run loop of one such fit, the `Trainer` with its workers in other processes.
Each actor (`keras_a3c.ray_actor.ActorLearner`) runs its share of the fit's `workers` as threads on a
replica of the network and sends the mean gradients of `segments_per_message` segments at a time; the
learner on this (the main) thread applies each message to the shared model and optimizer as it arrives,
with no barrier, and sends the new weights back to that actor alone (the asynchronous A3C update of
RLlib's old A3C). An actor that dies is restarted by Ray and training goes on; its messages in flight
are lost and logged. Ray is imported only when a `RayBackend` is made.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import time
from typing import Any

import gymnasium as gym
import keras
import numpy as np

from keras_a3c.acting import weights_of
from keras_a3c.ray_actor import ActorBuildError, ActorLearner, ActorSpec, Message
from keras_a3c.trainer import Trainer

logger = logging.getLogger("keras_a3c")

# How long to wait before calling an actor again whose last call failed (Ray is restarting it).
RETRY_SECONDS = 0.2

INSTALL_HINT = "pip install 'ray==2.60.0' (or: pip install -r requirements-ray.txt)"


def import_ray():
    """The `ray` module, or an `ImportError` that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(f"the Ray backend needs Ray, which is not installed: {INSTALL_HINT}") from error
    return ray


@dataclasses.dataclass(frozen=True)
class RayBackend:
    """Where and how `A3C.fit(..., backend=RayBackend(...))` runs its workers: in `actors` Ray actor
    processes, the fit's `workers` spread over them as evenly as possible (worker i in actor i % actors).

    Args:
      address: the Ray cluster: "auto" (the one `ray start --head` started on this machine), a head's
        "host:port", or None to start a private Ray instance for this fit (shut down when it ends). If
        Ray is already initialised in this process, that connection is used as it is and left open.
      actors: actor processes (Ray places them across the cluster's nodes, spread).
      segments_per_message: the fewest segments whose mean gradient one message to the learner carries;
        more segments amortise a message's cost (~25 ms on a local cluster), fewer keep the policy lag low.
      num_cpus_per_actor: the CPUs Ray reserves for each actor (and TensorFlow's threads in it).
      max_restarts: how often Ray may restart each actor that dies (-1: without limit); an actor that
        dies once more ends the fit with the error.
      stall_seconds: the fit fails if no actor has sent a message for this long (an actor that cannot be
        restarted anywhere, a hung env).
      runtime_env: passed to the actors (Ray's `runtime_env`: pip packages, a working dir, env vars for
        a real cluster); by default the actors get this process's `sys.path`, so modules importable here
        (an env's) are importable there on the same machine, and TensorFlow's INFO lines are quiet.
    """

    address: str | None = None
    actors: int = 2
    segments_per_message: int = 4
    num_cpus_per_actor: float = 1.0
    max_restarts: int = 10
    stall_seconds: float = 300.0
    runtime_env: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        import_ray()  # not installed: say so now, before anything runs
        if self.address is not None and not (isinstance(self.address, str) and self.address):
            raise ValueError(f"address must be 'auto', 'host:port', a 'ray://' address or None, got {self.address!r}")
        for name in ("actors", "segments_per_message"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.max_restarts, int) and self.max_restarts >= -1):
            raise ValueError(f"max_restarts must be an integer >= -1, got {self.max_restarts!r}")
        if not (self.num_cpus_per_actor > 0 and self.stall_seconds > 0):
            raise ValueError(f"num_cpus_per_actor and stall_seconds must be > 0, got {self.num_cpus_per_actor!r}, "
                             f"{self.stall_seconds!r}")

    def connect(self) -> bool:
        """Initialise Ray in this process unless it is; returns whether this call did (and so the fit must
        shut it down). An address that cannot be reached is a `ConnectionError` naming it."""
        ray = import_ray()
        if ray.is_initialized():
            return False
        address = self.address
        if address is not None and address != "auto" and "://" not in address:
            host, _, port = address.rpartition(":")
            try:
                socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
            except (OSError, ValueError) as error:
                raise ConnectionError(f"cannot reach the Ray cluster at {address!r} ({error}); is `ray start --head` "
                                      "running there, and is the port open?") from error
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if address is None:  # a private instance: room for every actor, whatever the core count
            options["num_cpus"] = max(os.cpu_count() or 1, math.ceil(self.actors * self.num_cpus_per_actor))
        try:
            ray.init(address=address, **options)
        except ConnectionError as error:
            raise ConnectionError(f"cannot connect to the Ray cluster at {address!r}: {error}; start one with "
                                  "`ray start --head`, or pass address=None for a private one") from error
        return True


class RayTrainer(Trainer):
    """One `fit` with the workers in Ray actors (see the module docstring); arguments as `Trainer`'s, plus
    the `RayBackend`. Like the `Trainer`, `run` returns the History or raises what went wrong, and leaves
    no actor running however it ends."""

    def __init__(self, *args, backend: RayBackend, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend
        self.started_ray = False
        self.actors: list[Any] = []
        self.pending: dict[Any, int] = {}  # in-flight `exchange` call -> actor index
        self.deaths: list[int] = []  # outages of each actor
        self.down: list[bool] = []  # whose last call failed and which has sent nothing since
        self.down_since: list[float] = []
        self.incarnations: list[str | None] = []  # each actor's process token, from its last message
        self.retry_at: dict[int, float] = {}  # actor index -> when to call it again
        self.failures = 0
        self.last_message = 0.0
        self.launched = 0.0
        self.busy = 0.0  # seconds this thread spent taking in and applying messages

    def _start_workers(self) -> None:
        backend, agent = self.backend, self.agent
        variables = agent.network.trainable_variables
        if not agent.optimizer.built:
            agent.optimizer.build(variables)
        self.apply = agent.learner.compile_apply()
        weights = weights_of(agent.network)
        self.weights = np.concatenate([w.reshape(-1) for w in weights])
        self.state.begin(backend.actors, self.total_steps, self.start_time)
        self.started_ray = backend.connect()
        ray = import_ray()
        runtime_env = backend.runtime_env
        if runtime_env is None:
            import sys

            runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                                        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}}
        remote = ray.remote(ActorLearner).options(
            num_cpus=backend.num_cpus_per_actor, max_restarts=backend.max_restarts, max_task_retries=0,
            scheduling_strategy="SPREAD", runtime_env=runtime_env,
        )
        network = keras.saving.serialize_keras_object(agent.network)
        for a in range(backend.actors):
            spec = ActorSpec(network=network, weights=weights, config=agent.config.to_dict(),
                             observation_space=self.observation_space, action_space=self.action_space, env=self.env,
                             worker_ids=list(range(a, self.num_workers, backend.actors)),
                             envs_per_worker=self.envs_per_worker, seed=self.seed,
                             segments_per_message=backend.segments_per_message,
                             threads=max(1, math.floor(backend.num_cpus_per_actor)),
                             registration=gym.spec(self.env) if isinstance(self.env, str) else None)
            self.actors.append(remote.remote(spec))
        self.deaths = [0] * backend.actors
        self.down = [False] * backend.actors
        self.down_since = [0.0] * backend.actors
        self.incarnations = [None] * backend.actors

    def _launch(self) -> None:
        self.launched = self.last_message = time.perf_counter()
        for index in range(len(self.actors)):
            self._request(index)

    def _request(self, index: int) -> None:
        """Ask actor `index` for its next message, sending it the current weights."""
        normalizer = self.agent.reward_normalizer
        moments = normalizer.moments() if normalizer is not None else None
        updates = int(self.agent.optimizer.iterations.numpy())
        call = self.actors[index].exchange.remote(self.weights, self.state.updates, updates, moments)
        self.pending[call] = index

    def _wait(self, seconds: float) -> None:
        """Apply the messages that arrive in the next `seconds`."""
        ray = import_ray()
        deadline = time.perf_counter() + seconds
        for index, when in list(self.retry_at.items()):
            if time.perf_counter() >= when and not self.state.stop.is_set():
                del self.retry_at[index]
                self._request(index)
        while self.pending and not self.state.stop.is_set():
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=left)
            for call in ready:
                self._receive(self.pending.pop(call), call)
        if not self.pending:  # every actor is being restarted
            self.state.stop.wait(max(0.0, deadline - time.perf_counter()))
        if time.perf_counter() - self.last_message > self.backend.stall_seconds and not self.state.stop.is_set():
            self.state.fail(TimeoutError(f"no Ray actor sent a message for {self.backend.stall_seconds:.0f} s "
                                         "(an actor that cannot be restarted anywhere, or a hung env?)"))

    def _receive(self, index: int, call: Any) -> None:
        """Apply actor `index`'s message and ask it for the next; a dead actor is logged and asked again
        (Ray restarts it), a failed one ends the fit."""
        ray = import_ray()
        start = time.perf_counter()
        try:
            message: Message = ray.get(call)
        except ray.exceptions.RayActorError as error:
            self._lost(index, error)
            return
        except ray.exceptions.RayTaskError as error:  # a worker's (or the actor's) own exception
            cause = error.cause if isinstance(error.cause, BaseException) else error
            if isinstance(cause, ActorBuildError):
                self._fail(RuntimeError(f"Ray actor {index} could not be built: {cause}"), cause)
                return
            cause.add_note(f"raised in keras_a3c Ray actor {index}")
            self.state.fail(cause)
            return
        self.last_message = time.perf_counter()
        if self.incarnations[index] not in (None, message.incarnation) and not self.down[index]:
            # It died and was restarted between two calls: no call failed, but it is an outage all the same.
            if not self._died(index, "restarted between two calls", None):
                return
        self.incarnations[index] = message.incarnation
        self.down[index] = False
        with self.agent.paused_updates():
            self.weights = self.apply(message.gradients)
            for _ in range(message.gradients.segments):
                self.state.add_update(index, message.version)
        if message.reward_moments is not None and message.reward_moments[2] > 0:
            self.agent.reward_normalizer.merge(*message.reward_moments)
        self.state.add_steps(index, message.steps, message.returns, message.lengths)
        if not self.state.stop.is_set():
            self._request(index)
        self.busy += time.perf_counter() - start

    def _lost(self, index: int, error: BaseException) -> None:
        """Actor `index` died or is being restarted: count the outage once, ask it again in a moment. An actor
        that could not be built, has been down for `stall_seconds`, or died more than `max_restarts` times
        ends the fit."""
        if getattr(error, "actor_init_failed", False):
            self._fail(RuntimeError(f"Ray actor {index} could not be built: {error}"), error)
            return
        now = time.perf_counter()
        if self.down[index] and now - self.down_since[index] > self.backend.stall_seconds:
            self._fail(TimeoutError(f"Ray actor {index} has been down for {self.backend.stall_seconds:.0f} s"), error)
            return
        if not self.down[index]:
            self.down_since[index] = now
            self.down[index] = True
            if not self._died(index, type(error).__name__, error):
                return
        self.retry_at[index] = time.perf_counter() + RETRY_SECONDS

    def _died(self, index: int, how: str, error: BaseException | None) -> bool:
        """Count an outage of actor `index`; False if it was one more than `max_restarts` (the fit fails)."""
        self.failures += 1
        self.deaths[index] += 1
        limit = self.backend.max_restarts
        if 0 <= limit < self.deaths[index]:
            self._fail(RuntimeError(f"Ray actor {index} died {self.deaths[index]} times (max_restarts={limit})"), error)
            return False
        logger.warning("keras_a3c: Ray actor %d died (%s); Ray restarts it and training goes on without the "
                       "segments it had not sent", index, how)
        return True

    def _fail(self, failure: BaseException, cause: BaseException | None) -> None:
        """End the fit with `failure`, caused by `cause`."""
        failure.__cause__ = cause
        self.state.fail(failure)

    def _running(self) -> bool:
        return bool(self.pending or self.retry_at)

    def _logs(self) -> dict[str, float]:
        logs = super()._logs()
        logs["actor_failures"] = self.failures
        # Near 1, the learner is the bottleneck: more actors would wait for it, not add env steps.
        logs["learner_busy"] = self.busy / max(time.perf_counter() - self.launched, 1e-9) if self.launched else 0.0
        return logs

    def _stop_workers(self) -> None:
        """Kill every actor (and wait until Ray reports each dead), shut down a Ray this fit started."""
        self.state.stop.set()
        if self.actors:
            ray = import_ray()
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            ends = [actor.__ray_ready__.remote() for actor in self.actors]
            ray.wait(ends, num_returns=len(ends), timeout=30)
            self.actors, self.pending = [], {}
        if self.started_ray:
            import_ray().shutdown()
            self.started_ray = False
        self.state.end()
