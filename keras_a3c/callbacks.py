"""Keras callbacks for A3C runs. All are called from the main thread of `A3C.fit` (see `keras_a3c.trainer`):
`on_train_batch_end` every ~0.1 s with the current logs, `on_epoch_end` every
`steps_per_epoch` env steps."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time

import keras

from keras_a3c import saving
from keras_a3c.envs import EnvSpec
from keras_a3c.files import staging_prefix

_SHOWN = ("episode_return", "entropy", "steps_per_second")


def _number(value: float) -> str:
    """Large values with thousands separators (41,580 rather than 4.158e+04)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


class StopOnMeanReturn(keras.callbacks.Callback):
    """Stop training once the mean return of recent episodes reaches `target`.

    The mean is over the last 100 finished training episodes (the `episode_return`
    log); `min_episodes` finished episodes are required first. That is the sampling policy's
    return; the greedy policy can score less while the two still differ. With `eval_env`, a
    training mean at the target also plays `eval_episodes` episodes of the greedy policy
    (`A3C.evaluate`, env seeds from `eval_seed`) with the updates paused (unless hogwild), and
    training stops only if their mean reaches `target` too; if not, training goes on and the
    next check comes after `min_episodes` more finished episodes (at least one).

    Attributes:
      stopped_at: the logs when the target was reached (with `greedy_return` when `eval_env`
        is given), or None.
      evaluations: (env steps, greedy mean return) of every greedy check, in order.
    """

    def __init__(self, target: float, min_episodes: int = 100, verbose: int = 0, eval_env: EnvSpec | None = None,
                 eval_episodes: int = 20, eval_seed: int = 20_000):
        super().__init__()
        if not (isinstance(eval_episodes, int) and eval_episodes >= 1):
            raise ValueError(f"eval_episodes must be an integer >= 1, got {eval_episodes!r}")
        self.target = target
        self.min_episodes = min_episodes
        self.verbose = verbose
        self.eval_env = eval_env
        self.eval_episodes = eval_episodes
        self.eval_seed = eval_seed
        self.stopped_at: dict | None = None
        self.evaluations: list[tuple[int, float]] = []
        self._check_at = min_episodes  # finished episodes before the next look at the mean

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.eval_env is not None:  # an eval_env the agent cannot play fails now, not at the first check
            self.model.check_env(self.eval_env)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.stopped_at is not None:
            self.model.stop_training = True
            return
        logs = logs or {}
        episodes = logs.get("episodes", 0)
        mean_return = logs.get("episode_return", math.nan)
        if episodes < self._check_at or not mean_return >= self.target:
            return
        steps = int(logs.get("env_steps", 0))
        if self.eval_env is not None:
            with self.model.paused_updates():
                greedy, _ = self.model.evaluate(self.eval_env, episodes=self.eval_episodes, deterministic=True,
                                                seed=self.eval_seed)
            self.evaluations.append((steps, greedy))
            if not greedy >= self.target:
                self._check_at = episodes + max(self.min_episodes, 1)
                if self.verbose:
                    print(f"\nStopOnMeanReturn: training mean {mean_return:.1f} >= {self.target}, greedy policy "
                          f"{greedy:.1f} over {self.eval_episodes} episodes: training on")
                return
            logs = {**logs, "greedy_return": greedy}
        self.model.stop_training = True
        self.stopped_at = dict(logs)
        if self.verbose:
            greedy_part = "" if self.eval_env is None else f", greedy policy {logs['greedy_return']:.1f}"
            print(f"\nStopOnMeanReturn: mean return {mean_return:.1f}{greedy_part} >= {self.target} "
                  f"after {steps:,} env steps")


class ProgressLogger(keras.callbacks.Callback):
    """Progress display for `fit`: verbose=1 a live progress bar over env steps,
    verbose=2 one line per epoch (readable in CI logs and files)."""

    def __init__(self, total_steps: int, verbose: int = 1, first_step: int = 0):
        super().__init__()
        self.total_steps = total_steps
        self.verbose = verbose
        self.first_step = first_step  # the global env step at which the fit started
        self._bar: keras.utils.Progbar | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.verbose == 1:
            self._bar = keras.utils.Progbar(self.total_steps, stateful_metrics=_SHOWN, unit_name="env step")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._bar is not None and logs:
            current = min(int(logs["env_steps"]) - self.first_step, self.total_steps - 1)
            self._bar.update(current, [(k, logs[k]) for k in _SHOWN if k in logs])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.verbose == 2 and logs:
            shown = "  ".join(f"{k} {_number(logs[k])}" for k in ("loss", *_SHOWN) if k in logs)
            print(f"epoch {epoch + 1}  env_steps {int(logs['env_steps']):,}  {shown}", flush=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._bar is not None and logs:
            shown = [(k, logs[k]) for k in _SHOWN if k in logs]
            self._bar.update(int(logs["env_steps"]) - self.first_step, shown, finalize=True)


class Checkpoint(keras.callbacks.Callback):
    """Save the agent's whole training state (`A3C.save`) during `fit`, keeping the newest `keep`.

    Checkpoints are directories `directory/ckpt-<global env step>` (the saved step count),
    written aside and renamed into place: a process killed mid-save leaves the
    earlier checkpoints loadable. Resume with
    `keras_a3c.load(keras_a3c.saving.latest_checkpoint(directory))`.

    Args:
      directory: created if missing; an unwritable directory, or one holding checkpoints of
        another run (ahead of the agent's env step), fails before training starts.
      every_steps: save when this many env steps have passed since the last save.
      every_seconds: save when this many seconds have passed since the last save.
      keep: how many checkpoints to keep (older ones are deleted); None keeps all.
      save_at_end: also save when `fit` ends normally (`save()` is public for other ends,
        e.g. after a KeyboardInterrupt).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        keep: int | None = 3,
        save_at_end: bool = True,
    ):
        super().__init__()
        for name, value in (("every_steps", every_steps), ("every_seconds", every_seconds)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")
        if keep is not None and not (isinstance(keep, int) and keep >= 1):
            raise ValueError(f"keep must be an integer >= 1 or None, got {keep!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.keep = keep
        self.save_at_end = save_at_end
        self._last_steps = 0
        self._last_time = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
            os.rmdir(tempfile.mkdtemp(prefix=staging_prefix(f"{saving.CHECKPOINT_PREFIX}probe"), dir=self.directory))
        except OSError as exc:
            raise OSError(f"cannot write checkpoints to {self.directory}: {exc}") from exc
        saving.remove_stale_staging(self.directory)
        steps = self.model.env_steps
        latest = saving.latest_checkpoint(self.directory)
        if latest is not None and saving.checkpoint_step(latest) > steps:
            # Checkpoints ahead of this agent belong to another run: saving here would mix the
            # two runs and `keep` would delete the other run's checkpoints.
            raise FileExistsError(
                f"{self.directory} holds checkpoints up to env step {saving.checkpoint_step(latest):,}, ahead of "
                f"this agent (env step {steps:,}): they are another run's. Resume from them with "
                "keras_a3c.load(keras_a3c.latest_checkpoint(directory)), or choose another directory"
            )
        self._last_steps = steps
        self._last_time = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        steps = self.model.env_steps
        steps_due = self.every_steps is not None and steps - self._last_steps >= self.every_steps
        time_due = self.every_seconds is not None and time.monotonic() - self._last_time >= self.every_seconds
        if steps_due or time_due:
            self.save()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.save_at_end:
            self.save()

    def save(self, agent: keras.Model | None = None) -> str:
        """Checkpoint `agent` (default: the model being trained) now; returns the checkpoint's path."""
        agent = agent or self.model
        state = agent.get_train_state()
        steps = state[0]["counters"]["env_steps"]
        # Named by the saved env-step count. The workers' last updates can land after their last
        # env step: a later save at the same step holds newer weights, so it replaces the older one.
        path = saving.write_state(saving.checkpoint_path(self.directory, steps), state, overwrite=True)
        if self.keep is not None:
            for old in saving.checkpoints(self.directory)[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        self._last_steps, self._last_time = steps, time.monotonic()
        return path
