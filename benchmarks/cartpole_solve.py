"""Time to solve CartPole-v1: keras_a3c against its peers and against the raw env step rate.

    python benchmarks/cartpole_solve.py                                    # 5 seeds, default config
    python benchmarks/cartpole_solve.py --peer sb3_a2c --peer sb3_ppo      # + Stable-Baselines3
    python benchmarks/cartpole_solve.py --scaling 1,2,4,8,16 --seeds 3     # worker scaling
    python benchmarks/cartpole_solve.py --hogwild_too                      # + lock-free updates
    python benchmarks/cartpole_solve.py --variant '{"importance_clip": 1.0}'  # + the preset with a change

The protocol, the same for every system: every finished training episode is logged with
the wall-clock seconds since the run started (the agent is built after the clock starts)
and the global env-step count; the run counts as solved when the mean return of the last
100 finished training episodes first reaches 475, and is stopped there, or at the cap
(`--max_seconds`, `--max_steps`). Each run is a fresh subprocess, so peak RSS is per run.
keras_a3c runs with the defaults of `examples/cartpole.py` (`keras_a3c.presets.CARTPOLE`, = flags/cartpole.flags)
unless `--workers` or `--scaling` say otherwise. Stable-Baselines3 (optional; on a CPU
machine `pip install torch==2.13.0` first, then `pip install stable-baselines3`) runs with
RL-Zoo's CartPole-v1 hyperparameters.

Runs go seed by seed, every system in turn. Prints one table and writes JSON (`--json`) with every run
and the median/min/max.
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from common import (  # noqa: E402
    ENV_ID,
    SOLVED_AT,
    WINDOW,
    cartpole_preset,
    fmt,
    in_subprocess,
    preset,
    run_if_child,
    run_result,
    sb3_episode_log,
    sb3_learn,
    stats,
    stop_at_seconds,
    zoo_linear,
)

PEERS = ("sb3_a2c", "sb3_ppo")

FLAGS = flags.FLAGS
flags.DEFINE_integer("seeds", 5, "Runs per system, seeds seed_offset .. seed_offset + seeds - 1.", lower_bound=1)
flags.DEFINE_integer("seed_offset", 0, "First seed.")
flags.DEFINE_multi_enum("peer", [], PEERS, "Also run this Stable-Baselines3 peer (repeatable).")
flags.DEFINE_list("scaling", [], "Also run keras_a3c with each of these worker counts, e.g. 1,2,4,8,16.")
flags.DEFINE_integer("workers", None, "keras_a3c worker threads (default: keras_a3c.presets.CARTPOLE).", lower_bound=1)
flags.DEFINE_bool("hogwild_too", False, "Also run keras_a3c with lock-free (Hogwild) updates.")
flags.DEFINE_bool("skip_default", False, "Do not run the default keras_a3c configuration.")
flags.DEFINE_multi_string("variant", [], "JSON: keras_a3c.presets.CARTPOLE fields (learning_rate, envs_per_worker, "
                          "...) or A3CConfig fields (importance_clip, ...) to change: one more keras_a3c system "
                          "with --workers workers (repeatable), for what-ifs.")
flags.DEFINE_float("max_seconds", 600.0, "Cap on the wall-clock seconds of one run.", lower_bound=1.0)
flags.DEFINE_integer("max_steps", 1_000_000, "Cap on the env steps of one run.", lower_bound=1)
flags.DEFINE_float("env_rate_seconds", 1.0, "Seconds spent measuring each raw env step rate.", lower_bound=0.01)
flags.DEFINE_string("json", "cartpole_solve.json", "Write every run and the summary here.")
flags.DEFINE_string("run", None, "Internal: run one system in this process (JSON spec).")
flags.register_validator("scaling", lambda ws: all(w.isdigit() and int(w) >= 1 for w in ws),
                         message="--scaling must be positive integers, e.g. 1,2,4,8,16")


# ----------------------------------------------------------------------------- protocol


# ----------------------------------------------------------------------------- systems


def run_keras_a3c(seed: int, max_seconds: float, max_steps: int, workers: int | None, hogwild: bool,
                  overrides: dict) -> dict:
    import keras

    import keras_a3c

    cartpole = cartpole_preset(hogwild, overrides)
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    agent = cartpole.make_agent()
    fit_start = time.perf_counter()
    history = agent.fit(
        ENV_ID,
        total_steps=max_steps,
        workers=workers or cartpole.workers,
        envs_per_worker=cartpole.envs_per_worker,
        seed=seed,
        verbose=0,
        callbacks=[keras_a3c.StopOnMeanReturn(SOLVED_AT, min_episodes=WINDOW), stop_at_seconds(max_seconds)],
    )
    seconds = time.perf_counter() - start
    log = history.episodes
    # Episode times count from the fit() call; shift them to the start of this run's clock.
    return run_result(
        log["time"] + (fit_start - start), log["env_steps"], log["return"], agent.env_steps, seconds,
        train_traces=agent.train_trace_count, updates=int(agent.optimizer.iterations),
    )


# RL-Zoo (rl-baselines3-zoo, hyperparams/a2c.yml and ppo.yml) settings for CartPole-v1.
SB3_CONFIGS = {
    "sb3_a2c": ("A2C", 8, {"ent_coef": 0.0}),
    "sb3_ppo": ("PPO", 8, {"n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
                           "ent_coef": 0.0, "learning_rate": zoo_linear(0.001), "clip_range": zoo_linear(0.2)}),
}


def run_sb3(name: str, seed: int, max_seconds: float, max_steps: int) -> dict:
    import stable_baselines3
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    algorithm, n_envs, kwargs = SB3_CONFIGS[name]
    start = time.perf_counter()
    log = sb3_episode_log(start, max_seconds, SOLVED_AT)
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=seed)
    model = getattr(stable_baselines3, algorithm)("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
    sb3_learn(model, total_timesteps=max_steps, callback=log)
    seconds = time.perf_counter() - start
    return run_result(log.times, log.steps, log.returns, model.num_timesteps, seconds,
                      torch_threads=torch.get_num_threads())


def env_step_rates(seconds: float) -> dict[str, float]:
    """Raw CartPole-v1 env steps per second with random actions: one env, and the vector
    env of one keras_a3c worker (gymnasium's numpy-vectorised CartPole)."""
    import gymnasium as gym

    from keras_a3c.envs import make_vector_env

    def rate(env, batch: int, sample) -> float:
        env.reset(seed=0)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                env.step(sample())
            n += 100
        elapsed = time.perf_counter() - start
        env.close()
        return n * batch / elapsed

    rng = np.random.default_rng(0)
    single = gym.make(ENV_ID)
    batch = preset("cartpole").envs_per_worker
    vector = make_vector_env(ENV_ID, batch)
    return {
        "single_env": rate(single, 1, lambda: int(rng.integers(2))),
        f"vector_env_{batch}": rate(vector, batch, lambda: rng.integers(2, size=batch)),
    }


# ----------------------------------------------------------------------------- driver


def child(spec: dict) -> dict:
    if spec["system"] == "keras_a3c":
        return run_keras_a3c(spec["seed"], spec["max_seconds"], spec["max_steps"], spec["workers"], spec["hogwild"],
                             spec["overrides"])
    if spec["system"] == "env_rates":
        return env_step_rates(spec["seconds"])
    return run_sb3(spec["system"], spec["seed"], spec["max_seconds"], spec["max_steps"])


def summarise(runs: list[dict]) -> dict:
    return {
        "solved": sum(r["solved"] for r in runs),
        "runs": len(runs),
        "seconds_to_solve": stats([r["seconds_to_solve"] for r in runs]),
        "steps_to_solve": stats([r["steps_to_solve"] for r in runs]),
        "steps_per_second": stats([r["steps_per_second"] for r in runs]),
        "sustained_steps_per_second": stats([r["sustained_steps_per_second"] for r in runs]),
        "peak_rss_mb": stats([r["peak_rss_mb"] for r in runs]),
    }


def print_table(systems: dict[str, dict], rates: dict[str, float]) -> None:
    vector_rate = max(rates.values())
    print(f"\nCartPole-v1, solved = mean of the last {WINDOW} training returns >= {SOLVED_AT:g}; "
          "median [min, max] over seeds")
    print("raw env steps/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()))
    header = ("system", "solved", "time to solve s", "env steps to solve", "env steps/s", "sustained env steps/s",
              "x single env", "x vector env", "peak RSS MB")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for name, entry in systems.items():
        s = entry["summary"]
        sps = s["steps_per_second"]
        row = (
            name, f"{s['solved']}/{s['runs']}", fmt(s["seconds_to_solve"], ".1f"), fmt(s["steps_to_solve"], ",.0f"),
            fmt(sps, ",.0f"), fmt(s["sustained_steps_per_second"], ",.0f"),
            f"{sps['median'] / rates['single_env']:.3f}", f"{sps['median'] / vector_rate:.3f}",
            fmt(s["peak_rss_mb"], ".0f"),
        )
        print("| " + " | ".join(row) + " |")


def main(argv):
    del argv
    if run_if_child(FLAGS.run, child):
        return

    caps = {"max_seconds": FLAGS.max_seconds, "max_steps": FLAGS.max_steps}
    default_workers = FLAGS.workers or preset("cartpole").workers
    variants: dict[str, dict] = {}
    if not FLAGS.skip_default:
        variants[f"keras_a3c {default_workers} workers"] = {"system": "keras_a3c", "workers": default_workers,
                                                            "hogwild": False, "overrides": {}}
    if FLAGS.hogwild_too:
        variants[f"keras_a3c {default_workers} workers hogwild"] = {"system": "keras_a3c", "workers": default_workers,
                                                                    "hogwild": True, "overrides": {}}
    for w in FLAGS.scaling:
        variants.setdefault(f"keras_a3c {int(w)} workers", {"system": "keras_a3c", "workers": int(w),
                                                            "hogwild": False, "overrides": {}})
    for overrides in FLAGS.variant:
        variants[f"keras_a3c {default_workers} workers {overrides}"] = {
            "system": "keras_a3c", "workers": default_workers, "hogwild": False, "overrides": json.loads(overrides)}
    for peer in FLAGS.peer:
        variants[peer] = {"system": peer}

    rates = in_subprocess(__file__, {"system": "env_rates", "seconds": FLAGS.env_rate_seconds})
    # Seed by seed, every system in turn: a drift of the machine's speed during the invocation hits them alike.
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for seed in range(FLAGS.seed_offset, FLAGS.seed_offset + FLAGS.seeds):
        for name, variant in variants.items():
            run = {"seed": seed, **in_subprocess(__file__, {**variant, **caps, "seed": seed})}
            print(f"{name} seed {seed}: solved {run['solved']}, {run['seconds_to_solve'] or '-'} s, "
                  f"{run['steps_to_solve'] or '-'} steps, {run['steps_per_second']:,.0f} steps/s, "
                  f"peak RSS {run['peak_rss_mb']:.0f} MB", flush=True)
            runs[name].append(run)
    systems = {name: {"config": variant, "runs": runs[name], "summary": summarise(runs[name])}
               for name, variant in variants.items()}
    print_table(systems, rates)
    with open(FLAGS.json, "w") as f:
        json.dump({"protocol": {"env": ENV_ID, "solved_at": SOLVED_AT, "window": WINDOW, **caps},
                   "env_steps_per_second": rates, "systems": systems, "cpus": os.cpu_count()}, f, indent=1)
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
