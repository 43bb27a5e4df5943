"""The run loop of `A3C.fit`: start the worker threads, tick the Keras callbacks on the main thread,
end epochs, stop and join every worker, and raise what went wrong.

The main thread owns the `Trainer`, the callbacks and the progress display; the workers own their
envs and policies (`keras_a3c.workers`); the shared model and optimizer change only inside the
learner's compiled update (`keras_a3c.learner`). See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import keras
from threadpoolctl import threadpool_limits

from keras_a3c.acting import ActionSampler, LocalPolicy, compiled_params, numpy_forward, weights_of
from keras_a3c.callbacks import ProgressLogger
from keras_a3c.envs import EnvSpec, make_vector_env
from keras_a3c.observations import ObservationCodec
from keras_a3c.workers import Worker

if TYPE_CHECKING:
    import gymnasium as gym

    from keras_a3c.agent import A3C

# How often the main thread wakes to run callbacks and refresh the progress display.
TICK_SECONDS = 0.1


@dataclasses.dataclass
class CtrlC:
    """Whether Ctrl-C was pressed while `ctrl_c_as_flag` was in force."""

    pressed: bool = False


@contextlib.contextmanager
def ctrl_c_as_flag() -> Iterator[CtrlC]:
    """While the block runs, Ctrl-C sets `CtrlC.pressed` instead of raising KeyboardInterrupt
    wherever the main thread happens to be: inside a `with lock:` or a save it would leave the lock
    held and a worker blocked on it forever, and inside TensorFlow's C++ it can be lost. Only
    Python's own handler is replaced, and only on the main thread (signal handlers can be set
    nowhere else); otherwise Ctrl-C raises as usual and the flag stays down."""
    flag = CtrlC()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield flag
        return

    def pressed(signum, frame) -> None:
        # Only a flag: the handler may run while this thread holds any lock (even the one inside
        # `stop.wait`, which `stop.set` would take again). A second Ctrl-C gives Python's handler
        # back, so a third one interrupts at once, should stopping ever hang.
        if flag.pressed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        flag.pressed = True

    signal.signal(signal.SIGINT, pressed)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class Trainer:
    """One `fit` of an agent: `workers` threads, each stepping `envs_per_worker` copies of `env`,
    until `total_steps` more env steps are taken, a callback sets `stop_training`, a worker
    fails or Ctrl-C comes. Arguments as in `A3C.fit`, checked there.

    `run` leaves no worker thread alive and every env closed, however it ends. Ctrl-C (`ctrl_c`,
    from `ctrl_c_as_flag`, which `A3C.fit` holds from its first line) only asks the workers to
    stop: the main thread reads the flag every tick, and `run` raises `KeyboardInterrupt` once
    every worker is joined, so no lock is left held by an interrupt and no save is cut in half.
    """

    def __init__(
        self,
        agent: A3C,
        env: EnvSpec,
        spaces: tuple[gym.Space, gym.Space],
        total_steps: int,
        workers: int,
        envs_per_worker: int,
        callbacks: Sequence[keras.callbacks.Callback],
        verbose: int,
        seed: int,
        steps_per_epoch: int,
        start_time: float,
        ctrl_c: CtrlC,
    ):
        self.agent = agent
        self.env = env
        self.observation_space, self.action_space = spaces
        self.total_steps = total_steps
        self.num_workers = workers
        self.envs_per_worker = envs_per_worker
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        self.start_time = start_time
        self.state = agent.training_state
        self.threads: list[Worker] = []
        self.epoch = 0
        self.last_epoch = 0  # the index of the epoch that ends with the budget
        self.epoch_open = False
        self.ctrl_c = ctrl_c

    def run(self) -> keras.callbacks.History:
        """Train; returns the agent's History (see `A3C.fit`)."""
        # One BLAS thread while the workers run: the workers are the parallelism, and a numpy twin's
        # matmuls each spreading over every core made a CNN twin 2-5x slower than on one (OpenBLAS).
        with threadpool_limits(limits=1, user_api="blas"):
            try:
                self._start_workers()
                callback_list = self._callback_list()
                callback_list.on_train_begin()
                self._loop(callback_list)
            finally:
                self._stop_workers()
        if self.state.error is not None:
            raise self.state.error
        if self.ctrl_c.pressed:
            raise KeyboardInterrupt
        # Workers are joined: the final counters are exact.
        logs = self._logs()
        self._end_epochs(callback_list, logs, final=True)
        self.agent.history.episodes = self.state.episode_log()
        callback_list.on_train_end(logs)  # a final save, if any, is not cut short by Ctrl-C
        if self.ctrl_c.pressed:  # pressed during the final callbacks
            raise KeyboardInterrupt
        return self.agent.history

    def _start_workers(self) -> None:
        """Build everything the workers share on this thread (optimizer slots, the traced update, the
        acting function), then one worker per thread with its own envs; start none yet."""
        agent, state, batch = self.agent, self.state, self.envs_per_worker
        sampler = ActionSampler(self.action_space)
        variables = agent.network.trainable_variables
        if not agent.optimizer.built:
            agent.optimizer.build(variables)  # slots exist before any thread can race to create them
        codec = ObservationCodec.for_space(self.observation_space, agent.network)
        layout = agent.learner.segment_layout(codec, sampler)
        train_function = agent.learner.compile(layout, batch, self.action_space, codec)
        forward = numpy_forward(agent.network)
        tf_params = None if forward is not None else compiled_params(agent.network, codec, batch)
        state.begin(self.num_workers, self.total_steps, self.start_time)
        initial_weights = weights_of(agent.network)
        for i in range(self.num_workers):
            self.threads.append(
                Worker(
                    worker_id=i,
                    env=make_vector_env(self.env, batch, (self.observation_space, self.action_space)),
                    policy=LocalPolicy(forward, tf_params, sampler, codec),
                    train_function=train_function,
                    initial_weights=initial_weights,
                    state=state,
                    n_steps=agent.config.n_steps,
                    layout=layout,
                    codec=codec,
                    seed=self.seed + i * batch,
                    train_lock=agent.learner.lock,
                    reward_normalizer=agent.reward_normalizer,
                    clip_raw_rewards=agent.config.clip_raw_rewards,
                )
            )

    def _callback_list(self) -> keras.callbacks.CallbackList:
        first_step = self.state.env_steps
        self.epoch = first_step // self.steps_per_epoch
        epochs = math.ceil((first_step + self.total_steps) / self.steps_per_epoch)
        self.last_epoch = epochs - 1
        progress = [ProgressLogger(self.total_steps, self.verbose, first_step)] if self.verbose else []
        self.agent.stop_training = False
        self.agent.reset_metrics()
        return keras.callbacks.CallbackList(
            self.callbacks + progress,
            add_history=True,
            model=self.agent,
            verbose=self.verbose,
            epochs=epochs,
            steps=None,
            total_steps=self.total_steps,
        )

    def _loop(self, callback_list: keras.callbacks.CallbackList) -> None:
        """Start the workers, then every TICK_SECONDS run the callbacks with the current logs and
        end the epochs that are full, until the workers stop or are told to."""
        callback_list.on_epoch_begin(self.epoch)
        self.epoch_open = True
        self._launch()
        tick = 0
        while True:
            self._wait(TICK_SECONDS)
            if self.state.error is not None or self.ctrl_c.pressed:
                return
            finished = self.state.stop.is_set() or not self._running()
            logs = self._logs()
            callback_list.on_train_batch_end(tick, logs)
            tick += 1
            if finished or self.agent.stop_training:
                return
            if self._end_epochs(callback_list, logs, final=False):
                self.agent.reset_metrics()
                self.state.reset_interval()
            if self.agent.stop_training:
                return

    def _end_epochs(self, callback_list: keras.callbacks.CallbackList, logs: dict[str, float], final: bool) -> bool:
        """End every epoch whose last step has been taken and, when `final`, the open partial one.
        Epochs that ended between two looks share that interval's metrics. The last epoch ends only when
        `final`, with the joined workers' exact counts, and holds the steps taken past the budget by the
        segments in flight. Returns whether any ended."""
        steps, ended = logs["env_steps"], False
        while self.epoch_open and (final or self.epoch < self.last_epoch):
            full = steps >= (self.epoch + 1) * self.steps_per_epoch
            if not (full or (final and steps > self.epoch * self.steps_per_epoch)):
                break
            callback_list.on_epoch_end(self.epoch, dict(logs))
            self.epoch_open, ended = False, True
            if (self.agent.stop_training or self.epoch == self.last_epoch
                    or (final and steps <= (self.epoch + 1) * self.steps_per_epoch)):
                break
            self.epoch += 1
            callback_list.on_epoch_begin(self.epoch)
            self.epoch_open = True
        return ended

    def _logs(self) -> dict[str, float]:
        """What the callbacks see: the update means since the last epoch end, the counters, the episodes."""
        logs = {name: float(value) for name, value in self.agent.update_logs.result().items()}
        logs.update(self.state.snapshot())
        logs["updates"] = int(self.agent.optimizer.iterations)
        if self.agent.config.entropy_decay_updates:  # beta as the next update will weight the entropy bonus
            logs["entropy_coef"] = float(self.agent.learner.entropy_coef())
        return logs

    def _launch(self) -> None:
        """Set the workers going."""
        for thread in self.threads:
            thread.start()

    def _wait(self, seconds: float) -> None:
        """Let the workers run for up to `seconds` (less if they stop)."""
        self.state.stop.wait(seconds)

    def _running(self) -> bool:
        """Whether any worker still runs."""
        return any(t.is_alive() for t in self.threads)

    def _stop_workers(self) -> None:
        """Stop and join every worker, close their envs, stop the fit's clock."""
        self.state.stop.set()
        for thread in self.threads:
            if thread.is_alive():
                thread.join()
        for thread in self.threads:
            thread.env.close()
        self.state.end()
