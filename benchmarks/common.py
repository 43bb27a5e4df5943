"""What the benchmarks share: the solve protocol, one run per subprocess, table cells, and the default
CartPole-v1 agent (`keras_a3c.presets.CARTPOLE`, the defaults of `examples/cartpole.py`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from absl import app

# The suite of the defaults: env id -> (env-step budget, bar for the mean return of the greedy policy).
SUITE = {
    "CartPole-v1": (1_000_000, 475.0),
    "Acrobot-v1": (500_000, -100.0),
    "LunarLander-v3": (3_000_000, 200.0),
    "Pendulum-v1": (3_000_000, -200.0),
}

ENV_ID = "CartPole-v1"
SOLVED_AT = 475.0  # mean return of the last WINDOW finished training episodes
WINDOW = 100


def preset(name: str):
    """`keras_a3c.presets.get(name)`, imported when first asked for: importing keras_a3c loads TensorFlow,
    which must stay out of the peers' processes (their peak RSS is measured)."""
    from keras_a3c import presets

    return presets.get(name)


def cartpole_preset(hogwild: bool | None = None, overrides: dict | None = None):
    """The settings of `examples/cartpole.py` (`keras_a3c.presets.CARTPOLE`); `overrides` changes preset fields
    (e.g. learning_rate, envs_per_worker) and A3CConfig fields (e.g. importance_clip)."""
    cartpole = preset("cartpole")
    overrides = dict(overrides or {})
    if hogwild is not None:
        overrides["hogwild"] = hogwild
    fields = {f.name for f in dataclasses.fields(cartpole)}
    config = cartpole.config.replace(**{k: v for k, v in overrides.items() if k not in fields})
    return dataclasses.replace(cartpole, config=config, **{k: v for k, v in overrides.items() if k in fields})


def default_agent():
    """The agent of `examples/cartpole.py` with its defaults, built on this thread."""
    return cartpole_preset().make_agent()


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


def run_specs(script: str, specs: list[dict], json_path: str, parallel: int = 1) -> Iterator[dict]:
    """Each spec in a fresh process (`in_subprocess`), `parallel` at a time; yields the results in the
    order of `specs`, each appended to `json_path` (without the child's scratch path `out`) as it arrives."""
    with ThreadPoolExecutor(parallel) as pool:
        for result in pool.map(lambda spec: in_subprocess(script, spec), specs):
            result = {key: value for key, value in result.items() if key != "out"}
            append_run(json_path, result)
            yield result


def run_if_child(spec_json: str | None, run: Callable[[dict], dict]) -> bool:
    """The child side of `in_subprocess`: given the JSON spec of a `--run` flag, run it and write
    its result to `spec["out"]`; returns whether this process was such a child."""
    if not spec_json:
        return False
    spec = json.loads(spec_json)
    result = run(spec)
    with open(spec["out"], "w") as f:
        json.dump(result, f)
    return True


def report_or_child(report: bool, json_path: str, make_report: Callable[[str], str], spec_json: str | None,
                    run: Callable[[dict], dict]) -> bool:
    """The start of a benchmark's `main`: print `make_report(json_path)` when `report`, or be the child of
    `in_subprocess` (`run_if_child`); returns whether either was done (then `main` has nothing left to do)."""
    if report:
        print(make_report(json_path))
        return True
    return run_if_child(spec_json, run)


def read_runs(path: str) -> list[dict]:
    """The runs a benchmark appended to `path`, one JSON object a line."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_run(path: str, run: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(run) + "\n")


EVAL_SEED = 10_000  # evaluation episode i resets with seed EVAL_SEED + i (as examples/play.py)


def evaluate_episodes(policy, env_id: str, episodes: int) -> np.ndarray:
    """Returns of `episodes` episodes of `env_id`, episode i with env seed EVAL_SEED + i, played by
    `policy(observations [episodes, ...]) -> actions`. keras_a3c (and so TensorFlow) is imported only here,
    after a peer has trained."""
    from keras_a3c.evaluation import evaluate_policy

    return evaluate_policy(policy, env_id, episodes, num_envs=episodes, seed=EVAL_SEED)


def require_sb3(what: str) -> None:
    """A usage error naming `what` needs Stable-Baselines3, when it is not installed."""
    if importlib.util.find_spec("stable_baselines3") is None:
        raise app.UsageError(f"{what} needs Stable-Baselines3, which is not installed; on a CPU machine "
                             "`pip install torch==2.13.0` first, then `pip install stable-baselines3`")


def stop_at_seconds(max_seconds: float):
    """A Keras callback that stops `fit` once its logs' "time" (seconds since `fit` began) reaches
    `max_seconds` (keras is imported here, in the run's child process only)."""
    import keras

    class StopAtCap(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if logs["time"] >= max_seconds:
                self.model.stop_training = True

    return StopAtCap()


def sb3_learn(model, **learn_kwargs):
    """`model.learn(**learn_kwargs)` with a logger that writes nothing: SB3's default logger makes an empty
    `SB3-<date>` directory in the temp directory on every `learn`, even with `verbose=0`."""
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(None, []))
    return model.learn(**learn_kwargs)


def sb3_episode_log(start: float, max_seconds: float, target: float | None = None):
    """A Stable-Baselines3 callback that logs each finished training episode (`times` in seconds since
    `start`, `steps`, `returns`; `learn_start` is when `learn` began) and stops learning once the mean of the
    last WINDOW returns reaches `target` (if given) or `max_seconds` have passed since `start`."""
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeLog(BaseCallback):
        def __init__(self):
            super().__init__()
            self.times, self.steps, self.returns = [], [], []
            self.learn_start = start

        def _on_training_start(self) -> None:
            self.learn_start = time.perf_counter()

        def _on_step(self) -> bool:
            now = time.perf_counter() - start
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.times.append(now)
                    self.steps.append(self.num_timesteps)
                    self.returns.append(info["episode"]["r"])
            reached = (target is not None and len(self.returns) >= WINDOW
                       and np.mean(self.returns[-WINDOW:]) >= target)
            return not reached and now < max_seconds

    return EpisodeLog()


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


def zoo_linear(initial: float):
    """RL-Zoo's `lin_<initial>`: a learning rate (or clip range) falling linearly to 0 over SB3's `learn`."""
    return lambda progress_remaining: progress_remaining * initial


def sb3_a2c_zoo(env_id: str) -> tuple[int, bool, dict]:
    """RL-Zoo's A2C settings (rl-baselines3-zoo, hyperparams/a2c.yml) for a task of the suite:
    (n_envs, `normalize` = VecNormalize of observations and rewards with the algorithm's gamma,
    A2C keyword arguments). LunarLander-v3 takes the zoo's LunarLander-v2 entry; Pendulum-v1 its
    current entry (the older Pendulum-v0 one was the same but gamma 0.99)."""
    if env_id == "CartPole-v1":
        return 8, False, {"ent_coef": 0.0}
    if env_id == "Acrobot-v1":
        return 16, True, {"ent_coef": 0.0}
    if env_id == "LunarLander-v3":
        return 8, False, {"gamma": 0.995, "n_steps": 5, "learning_rate": zoo_linear(0.00083), "ent_coef": 0.00001}
    if env_id == "Pendulum-v1":
        return 8, True, {
            "ent_coef": 0.0, "max_grad_norm": 0.5, "n_steps": 8, "gae_lambda": 0.9, "vf_coef": 0.4, "gamma": 0.9,
            "use_rms_prop": True, "normalize_advantage": False, "learning_rate": zoo_linear(7e-4), "use_sde": True,
            "policy_kwargs": {"log_std_init": -2, "ortho_init": False},
        }
    raise ValueError(f"no RL-Zoo A2C settings for {env_id}")
