"""The learning curve of a long run, from its newest checkpoint (the episode log a save keeps).

    python examples/atari.py --checkpoint_dir /tmp/pong_run --total_steps 2000000
    python benchmarks/learning_curve.py --checkpoint_dir /tmp/pong_run --every 100000 \\
        --json benchmarks/results/atari_pong.json --plot docs/pong_curve.png

Prints, every `--every` env steps, the mean return of the last 100 finished training episodes, the
training seconds and the env steps per second since the previous point; writes them with the run's
totals to `--json`, and with `--plot` draws every episode of the run (over all its resumed sittings) as
`keras_a3c.plot_history` does.
"""

from __future__ import annotations

import json
import os
import types

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_a3c  # noqa: E402

flags.DEFINE_string("checkpoint_dir", None, "The run's --checkpoint_dir.", required=True)
flags.DEFINE_integer("every", 100_000, "Env steps between points of the curve.", lower_bound=1)
flags.DEFINE_integer("window", 100, "Episodes in each mean.", lower_bound=1)
flags.DEFINE_string("json", None, "Write the curve here.")
flags.DEFINE_string("plot", None, "Draw the run's episodes to this image (.png, .svg or .pdf).")
flags.DEFINE_string("label", "", "What the run was (the command), stored with the curve.")
FLAGS = flags.FLAGS


def curve(log: dict[str, np.ndarray], every: int, window: int) -> list[dict]:
    """One point per `every` env steps: the mean return of the last `window` episodes that ended by then."""
    points, previous = [], (0.0, 0)
    for steps in range(every, int(log["env_steps"].max()) + 1, every):
        ended = np.flatnonzero(log["env_steps"] <= steps)
        if not len(ended):
            continue
        last = ended[-window:]
        seconds = float(log["time"][ended[-1]])
        points.append({"env_steps": steps, "seconds": seconds, "episodes": len(ended),
                       "mean_return": float(np.mean(log["return"][last])),
                       "steps_per_second": (steps - previous[1]) / max(seconds - previous[0], 1e-9)})
        previous = (seconds, steps)
    return points


def main(argv):
    del argv
    path = keras_a3c.latest_checkpoint(FLAGS.checkpoint_dir)
    if path is None:
        raise app.UsageError(f"no checkpoint in {FLAGS.checkpoint_dir}")
    agent = keras_a3c.load(path)
    log = agent.training_state.episode_log()
    points = curve(log, FLAGS.every, FLAGS.window)
    for point in points:
        print(f"{point['env_steps']:>10,} env steps  {point['seconds']:7.0f} s  {point['episodes']:6d} episodes  "
              f"mean return of the last {FLAGS.window}: {point['mean_return']:7.2f}  "
              f"({point['steps_per_second']:,.0f} env steps/s)")
    state = agent.training_state.snapshot()
    summary = {"label": FLAGS.label, "checkpoint": os.path.basename(path), "env_steps": agent.env_steps,
               "seconds": state["time"], "episodes": int(state["episodes"]), "curve": points}
    print(f"{agent.env_steps:,} env steps in {state['time']:.0f} s of training "
          f"({agent.env_steps / state['time']:,.0f} env steps/s)")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(summary, f, indent=1)
    if FLAGS.plot:
        keras_a3c.plot_history(types.SimpleNamespace(episodes=log), FLAGS.plot, window=FLAGS.window)
        print(f"wrote the curve to {FLAGS.plot}")


if __name__ == "__main__":
    app.run(main)
