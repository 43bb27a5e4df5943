"""Learning curves of a `fit` run as an image: return vs env steps and vs wall-clock seconds.

Draws on a `matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so the
backend and figures of a user who already imported pyplot are left alone.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from keras_a3c.files import write_atomically

_PANELS = (("env_steps", "env steps", "Return vs env steps"),
           ("time", "wall-clock seconds since fit started", "Return vs wall-clock time"))


def plot_history(history: Any, path: str | os.PathLike, target: float | None = None, window: int = 100) -> None:
    """Write learning curves of `history` (the History returned by `A3C.fit`) to `path`.

    Two panels, return vs env steps and vs seconds since `fit` started: the return of
    each finished training episode faint, the rolling mean of the last `window` episodes bold,
    and `target` (the solve threshold) dashed if given. Without `history.episodes` the History
    rows are plotted instead (their `episode_return` is already a mean of recent episodes).
    The format follows the extension of `path` (.png, .svg, .pdf, ...). The image is written
    beside `path` and renamed into place (`keras_a3c.files`), so a failure leaves no partial file.
    """
    if not (isinstance(window, (int, np.integer)) and window >= 1):
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    path = os.path.abspath(os.fspath(path))
    fmt = os.path.splitext(path)[1][1:].lower()
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot tell the image format of {path}: use one of the extensions {sorted(supported)}")
    episodes = getattr(history, "episodes", None)
    rows = None if episodes and len(episodes.get("return", ())) else _history_rows(history)

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 2, sharey=True)
    for axes, (x_key, x_label, title) in zip(panels, _PANELS, strict=True):
        if rows is None:
            x, returns = np.asarray(episodes[x_key], float), np.asarray(episodes["return"], float)
            # Many points: small, rasterized markers keep the image readable and SVG/PDF small.
            axes.scatter(x, returns, s=12 if len(returns) < 200 else 3, alpha=0.25, color="tab:blue", linewidths=0,
                         rasterized=True, label=f"return of each training episode ({len(returns):,})")
            axes.plot(x, _rolling_mean(returns, window), color="tab:blue", linewidth=2.2,
                      label=f"mean of the last {window} episodes")
        else:
            axes.plot(rows[x_key], rows["episode_return"], color="tab:blue", linewidth=2.2, marker="o", markersize=3,
                      label="mean return of recent episodes (History rows)")
        if target is not None:
            axes.axhline(target, color="tab:red", linestyle="--", linewidth=1.2, label=f"solve threshold {target:g}")
        axes.set_xlabel(x_label)
        axes.set_title(title)
        axes.grid(alpha=0.3)
    panels[0].xaxis.set_major_formatter(EngFormatter(sep=""))
    panels[0].set_ylabel("episode return")
    # Below the panels, so the legend never covers a curve.
    legend = figure.legend(*panels[0].get_legend_handles_labels(), loc="outside lower center", ncols=3,
                           frameon=False)
    for handle in legend.legend_handles:
        if isinstance(handle, PathCollection):  # the faint per-episode dots, made visible in the legend
            handle.set_sizes([16])
            handle.set_alpha(0.6)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write the plot to {path}: it is a directory")

    def write(target: str) -> None:
        with open(target, "xb") as file:
            figure.savefig(file, format=fmt, dpi=110)

    write_atomically(path, write, "plot", overwrite=True)


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each index (of all values so far at the start)."""
    sums = np.cumsum(values)
    dropped = np.concatenate([np.zeros(window), sums])[: len(values)]
    return (sums - dropped) / np.minimum(np.arange(1, len(values) + 1), window)


def _history_rows(history: Any) -> dict[str, np.ndarray]:
    """`env_steps`, `time` and `episode_return` of the History rows that have a finished episode."""
    rows = getattr(history, "history", None)
    if not rows:
        raise ValueError("the history holds no finished episodes and no History rows: nothing to plot")
    keys = ("episode_return", "env_steps", "time")
    missing = [key for key in keys if key not in rows]
    if missing:
        raise ValueError(f"the History rows have no {', '.join(missing)}: is this the History returned by A3C.fit?")
    columns = {key: np.asarray(rows[key], float) for key in keys}
    finished = np.isfinite(columns["episode_return"])  # NaN until the first episode ends
    if not finished.any():
        raise ValueError("no training episode finished during the run: nothing to plot")
    return {key: column[finished] for key, column in columns.items()}
