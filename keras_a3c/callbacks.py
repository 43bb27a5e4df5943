"""Keras callbacks for A3C runs. All are called from the main thread of `A3C.fit`:
`on_train_batch_end` every ~0.1 s with the current logs, `on_epoch_end` every
`steps_per_epoch` env steps."""

from __future__ import annotations

import math

import keras

_SHOWN = ("episode_return", "entropy", "steps_per_second")


def _number(value: float) -> str:
    """Large values with thousands separators (41,580 rather than 4.158e+04)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


class StopOnMeanReturn(keras.callbacks.Callback):
    """Stop training once the mean return of recent episodes reaches `target`.

    The mean is over the last 100 finished training episodes (the `episode_return`
    log); `min_episodes` finished episodes are required first.
    """

    def __init__(self, target: float, min_episodes: int = 100, verbose: int = 0):
        super().__init__()
        self.target = target
        self.min_episodes = min_episodes
        self.verbose = verbose
        self.stopped_at: dict | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        mean_return = logs.get("episode_return", math.nan)
        if logs.get("episodes", 0) >= self.min_episodes and mean_return >= self.target:
            self.model.stop_training = True
            if self.stopped_at is None:
                self.stopped_at = dict(logs)
                if self.verbose:
                    print(
                        f"\nStopOnMeanReturn: mean return {mean_return:.1f} >= {self.target} "
                        f"after {logs.get('env_steps', 0):,} env steps"
                    )


class ProgressLogger(keras.callbacks.Callback):
    """Progress display for `fit`: verbose=1 a live progress bar over env steps,
    verbose=2 one line per epoch (readable in CI logs and files)."""

    def __init__(self, total_steps: int, verbose: int = 1):
        super().__init__()
        self.total_steps = total_steps
        self.verbose = verbose
        self._bar: keras.utils.Progbar | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.verbose == 1:
            self._bar = keras.utils.Progbar(self.total_steps, stateful_metrics=_SHOWN, unit_name="env step")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._bar is not None and logs:
            current = min(int(logs["env_steps"]), self.total_steps - 1)
            self._bar.update(current, [(k, logs[k]) for k in _SHOWN if k in logs])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.verbose == 2 and logs:
            shown = "  ".join(f"{k} {_number(logs[k])}" for k in ("loss", *_SHOWN) if k in logs)
            print(f"epoch {epoch + 1}  env_steps {int(logs['env_steps']):,}  {shown}", flush=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._bar is not None and logs:
            self._bar.update(int(logs["env_steps"]), [(k, logs[k]) for k in _SHOWN if k in logs], finalize=True)
