"""What the benchmarks share: the default CartPole-v1 configuration of `examples/cartpole.py`
(read from flags/cartpole.flags, which a test keeps equal to the example's flag defaults)."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

import numpy as np

ENV_ID = "CartPole-v1"
SOLVED_AT = 475.0  # mean return of the last WINDOW finished training episodes
WINDOW = 100
FLAGFILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flags", "cartpole.flags")


def flagfile_config(path: str = FLAGFILE) -> dict[str, str]:
    """`--name=value` lines of a flagfile as {name: value}; `--noname` as 'false'."""
    config = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("--"):
                name, sep, value = line[2:].partition("=")
                if not sep and name.startswith("no"):
                    name, value = name[2:], "false"
                config[name] = value
    return config


def default_agent(hogwild: bool | None = None):
    """The example's actor-critic and compile settings, built on this thread."""
    import keras

    import keras_a3c

    config = flagfile_config()
    obs_space, action_space = keras_a3c.envs.env_spaces(ENV_ID)
    network = keras_a3c.actor_critic_mlp(
        obs_space, action_space, hidden_units=[int(u) for u in config["hidden_units"].split(",")]
    )
    agent = keras_a3c.A3C(network)
    learning_rate, decay_updates = float(config["learning_rate"]), int(config["learning_rate_decay_updates"])
    if decay_updates:
        learning_rate = keras.optimizers.schedules.PolynomialDecay(learning_rate, decay_updates, learning_rate / 10)
    agent.compile(
        optimizer=keras.optimizers.Adam(learning_rate, epsilon=float(config["adam_epsilon"])),
        entropy_coef=float(config["entropy_coef"]),
        value_coef=float(config["value_coef"]),
        gamma=float(config["gamma"]),
        n_steps=int(config["n_steps"]),
        max_grad_norm=float(config["max_grad_norm"]) or None,
        hogwild=config["hogwild"] != "false" if hogwild is None else hogwild,
    )
    return agent


def solve_point(
    times: np.ndarray, steps: np.ndarray, returns: np.ndarray, target: float = SOLVED_AT
) -> tuple[float, int] | None:
    """(seconds, env steps) at which the mean of the last WINDOW returns first reaches `target`."""
    if len(returns) < WINDOW:
        return None
    means = np.convolve(returns, np.ones(WINDOW) / WINDOW, mode="valid")  # means[i] ends at episode i + WINDOW - 1
    hits = np.flatnonzero(means >= target)
    if not len(hits):
        return None
    i = hits[0] + WINDOW - 1
    return float(times[i]), int(steps[i])


def run_result(times, steps, returns, total_steps: int, seconds: float, target: float = SOLVED_AT, **extra) -> dict:
    """One run's row: solved (the mean of the last WINDOW returns reached `target`), time and
    steps to solve, throughput (overall, and sustained over the second half), peak RSS."""
    times, steps, returns = (np.asarray(x, np.float64) for x in (times, steps, returns))
    point = solve_point(times, steps, returns, target)
    best = float(np.convolve(returns, np.ones(WINDOW) / WINDOW, mode="valid").max()) if len(returns) >= WINDOW else None
    # Sustained throughput: over the second half of the run's episodes, set-up excluded.
    half = len(times) // 2
    sustained = None
    if len(times) > 2 and times[-1] > times[half]:
        sustained = (steps[-1] - steps[half]) / (times[-1] - times[half])
    return {
        "solved": point is not None,
        "seconds_to_solve": point[0] if point else None,
        "steps_to_solve": point[1] if point else None,
        "env_steps": int(total_steps),
        "seconds": seconds,
        "steps_per_second": total_steps / seconds,
        "sustained_steps_per_second": sustained,
        "episodes": len(returns),
        "best_mean_return": best,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **extra,
    }


def in_subprocess(script: str, spec: dict) -> dict:
    """Run `script --run=<spec as JSON>` in a fresh Python process (so peak RSS is per run) and
    return the JSON result it writes to `spec["out"]`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        proc = subprocess.run(
            [sys.executable, os.path.abspath(script), f"--run={json.dumps({**spec, 'out': out})}"],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark run {spec} failed:\n{proc.stderr[-3000:]}")
        with open(out) as f:
            return json.load(f)


def stats(values: list) -> dict | None:
    """Median, min and max of the values that are not None; None if there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(stat: dict | float | None, spec: str) -> str:
    """A table cell: `median [min, max]` of a `stats` dict, or one number, or '-'."""
    if stat is None:
        return "-"
    if not isinstance(stat, dict):
        return f"{stat:{spec}}"
    return f"{stat['median']:{spec}} [{stat['min']:{spec}}, {stat['max']:{spec}}]"
