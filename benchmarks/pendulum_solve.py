"""Time to a Pendulum-v1 policy: keras_a3c against Stable-Baselines3 A2C and the raw env step rate.

    python benchmarks/pendulum_solve.py                                    # 5 seeds, default config
    python benchmarks/pendulum_solve.py --peer sb3_a2c                     # + Stable-Baselines3 A2C

The protocol, the same for every system: every finished training episode is logged with
the wall-clock seconds since the run started (the agent is built after the clock starts)
and the global env-step count; the run is stopped when the mean return of the last 100
finished training episodes first reaches `--target_return` (-175, the example's default),
or at the caps (`--max_seconds`; `--max_steps`, 3M = the example's `total_steps`; SB3 also
stops at its own RL-Zoo budget, `--sb3_max_steps` = 1M). Then the deterministic policy is
evaluated over `--eval_episodes` Pendulum-v1 episodes (env seeds 10000 + i): keras_a3c's
policy is exported with `A3C.export` and loaded with `tf.saved_model.load` alone (its
`serve` gives the clipped mean torque) -- the acceptance check, which passes at a mean of
`--eval_return` (-200); SB3's with `model.predict(obs, deterministic=True)` on observations
normalised by its frozen VecNormalize statistics. Each run is a fresh subprocess, so peak
RSS is per run.

keras_a3c runs with the defaults of `examples/pendulum.py` (read from flags/pendulum.flags,
built as the example builds it) unless `--workers` says otherwise. Stable-Baselines3
(optional; on a CPU machine `pip install torch==2.13.0` first, then `pip install
stable-baselines3`) runs A2C with RL-Zoo's Pendulum-v1 hyperparameters, on one torch thread
(`--torch_threads`): with torch's default of one thread per core it ran about as fast on an idle
2-core machine, but 16-60x slower whenever another process was busy on it.

Prints one table and writes JSON (`--json`, rewritten after every run) with every run and
the median/min/max.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from common import (  # noqa: E402
    EVAL_SEED,
    WINDOW,
    evaluate_episodes,
    fmt,
    in_subprocess,
    preset,
    require_sb3,
    run_if_child,
    run_result,
    sb3_a2c_zoo,
    sb3_learn,
    stats,
    stop_at_seconds,
)

ENV_ID = "Pendulum-v1"
PEERS = ("sb3_a2c",)

FLAGS = flags.FLAGS
flags.DEFINE_integer("seeds", 5, "Runs per system, seeds seed_offset .. seed_offset + seeds - 1.", lower_bound=1)
flags.DEFINE_integer("seed_offset", 0, "First seed.")
flags.DEFINE_multi_enum("peer", [], PEERS, "Also run this Stable-Baselines3 peer (repeatable).")
flags.DEFINE_integer("workers", None, "keras_a3c worker threads (default: keras_a3c.presets.PENDULUM).", lower_bound=1)
flags.DEFINE_bool("skip_default", False, "Do not run keras_a3c (only the peers).")
flags.DEFINE_float("target_return", None, "Stop once the mean of the last 100 training returns reaches this "
                   "(default: keras_a3c.presets.PENDULUM.target_return).")
flags.DEFINE_float("eval_return", -200.0, "A seed passes when its deterministic policy's eval mean reaches this.")
flags.DEFINE_integer("eval_episodes", 20, "Deterministic evaluation episodes after training (env seeds 10000 + i).",
                     lower_bound=1)
flags.DEFINE_float("max_seconds", 600.0, "Cap on the training wall-clock seconds of one run.", lower_bound=1.0)
flags.DEFINE_integer("max_steps", None, "Cap on the env steps of one run (default: "
                     "keras_a3c.presets.PENDULUM.total_steps).", lower_bound=1)
flags.DEFINE_integer("sb3_max_steps", 1_000_000,
                     "SB3's own cap: RL-Zoo's n_timesteps for Pendulum-v1 (its learning rate decays linearly to 0 "
                     "over min(max_steps, sb3_max_steps)).", lower_bound=1)
flags.DEFINE_integer("torch_threads", 1,
                     "SB3's torch.set_num_threads; 0 keeps torch's default (one thread per core).", lower_bound=0)
flags.DEFINE_float("env_rate_seconds", 1.0, "Seconds spent measuring each raw env step rate.", lower_bound=0.01)
flags.DEFINE_string("json", "pendulum_solve.json", "Write every run and the summary here.")
flags.DEFINE_string("run", None, "Internal: run one system in this process (JSON spec).")


# ----------------------------------------------------------------------------- protocol


def pendulum_result(times, steps, returns, total_steps: int, seconds: float, target: float,
                    eval_returns: list[float], eval_seconds: float, **extra) -> dict:
    """One run's row (`common.run_result` at `target`) plus the deterministic evaluation."""
    return run_result(
        times, steps, returns, total_steps, seconds, target,
        eval_mean=float(np.mean(eval_returns)), eval_std=float(np.std(eval_returns)),
        eval_returns=[float(r) for r in eval_returns], eval_seconds=eval_seconds, **extra,
    )


# ----------------------------------------------------------------------------- systems


def run_keras_a3c(spec: dict) -> dict:
    import keras
    import tensorflow as tf

    import keras_a3c

    seed, workers = spec["seed"], spec["workers"] or preset("pendulum").workers
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    agent = preset("pendulum").make_agent()
    fit_start = time.perf_counter()
    history = agent.fit(
        ENV_ID,
        total_steps=spec["max_steps"],
        workers=workers,
        envs_per_worker=preset("pendulum").envs_per_worker,
        seed=seed,
        steps_per_epoch=preset("pendulum").steps_per_epoch,
        verbose=0,
        callbacks=[keras_a3c.StopOnMeanReturn(spec["target_return"], min_episodes=WINDOW),
                   stop_at_seconds(spec["max_seconds"])],
    )
    seconds = time.perf_counter() - start
    log = history.episodes

    # The acceptance check: the exported SavedModel, loaded with TensorFlow alone.
    eval_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "policy")
        agent.export(path)
        policy = tf.saved_model.load(path)
        eval_returns = evaluate_episodes(lambda obs: policy.serve(tf.constant(obs, tf.float32)).numpy(), ENV_ID,
                                         spec["eval_episodes"])
    eval_seconds = time.perf_counter() - eval_start
    # Episode times count from the fit() call; shift them to the start of this run's clock.
    return pendulum_result(
        log["time"] + (fit_start - start), log["env_steps"], log["return"], agent.env_steps, seconds,
        spec["target_return"], eval_returns, eval_seconds, workers=workers,
        train_traces=agent.train_trace_count, updates=int(agent.optimizer.iterations),
    )


def run_sb3(spec: dict) -> dict:
    try:
        import stable_baselines3
        import torch
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize
    except ImportError as exc:
        raise SystemExit(
            f"--peer {spec['system']} needs Stable-Baselines3, which is not installed ({exc}); on a CPU machine "
            "`pip install torch==2.13.0` first, then `pip install stable-baselines3`"
        ) from exc

    if spec["torch_threads"]:
        torch.set_num_threads(spec["torch_threads"])
    seed, target, max_seconds = spec["seed"], spec["target_return"], spec["max_seconds"]
    max_steps = min(spec["max_steps"], spec["sb3_max_steps"])
    times, steps, returns = [], [], []

    class EpisodeLog(BaseCallback):
        solved = False

        def _on_step(self) -> bool:
            now = time.perf_counter() - start
            for info in self.locals["infos"]:
                if "episode" in info:  # from the Monitor under VecNormalize: the raw return
                    times.append(now)
                    steps.append(self.num_timesteps)
                    returns.append(float(info["episode"]["r"]))
                    # Checked after each episode, as `solve_point` counts: the 8 envs end their
                    # 200-step episodes on the same step, and the mean may cross mid-batch.
                    self.solved |= len(returns) >= WINDOW and np.mean(returns[-WINDOW:]) >= target
            return not self.solved and now < max_seconds

    start = time.perf_counter()
    n_envs, _, kwargs = sb3_a2c_zoo(ENV_ID)  # the zoo normalises Pendulum
    env = VecNormalize(make_vec_env(ENV_ID, n_envs=n_envs, seed=seed), gamma=kwargs["gamma"])
    model = stable_baselines3.A2C("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
    sb3_learn(model, total_timesteps=max_steps, callback=EpisodeLog())
    seconds = time.perf_counter() - start

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the evaluation imports TF
    eval_start = time.perf_counter()
    env.training, env.norm_reward = False, False  # frozen statistics
    eval_returns = evaluate_episodes(lambda obs: model.predict(env.normalize_obs(obs), deterministic=True)[0],
                                     ENV_ID, spec["eval_episodes"])
    eval_seconds = time.perf_counter() - eval_start
    return pendulum_result(times, steps, returns, model.num_timesteps, seconds, target, eval_returns, eval_seconds,
                           torch_threads=torch.get_num_threads(), sb3_max_steps=max_steps, peak_rss_mb=peak_rss_mb)


def env_step_rates(seconds: float) -> dict[str, float]:
    """Raw Pendulum-v1 env steps per second with random torques: one env (reset when its
    episode ends), and the vector env of one keras_a3c worker (a SyncVectorEnv: gymnasium
    has no numpy-vectorised Pendulum)."""
    import gymnasium as gym

    from keras_a3c.envs import make_vector_env

    rng = np.random.default_rng(0)

    def single_rate() -> float:
        env = gym.make(ENV_ID)
        env.reset(seed=0)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                _, _, terminated, truncated, _ = env.step(rng.uniform(-2.0, 2.0, size=(1,)).astype(np.float32))
                if terminated or truncated:
                    env.reset()
            n += 100
        elapsed = time.perf_counter() - start
        env.close()
        return n / elapsed

    def vector_rate(batch: int) -> float:
        env = make_vector_env(ENV_ID, batch)
        env.reset(seed=0)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                env.step(rng.uniform(-2.0, 2.0, size=(batch, 1)).astype(np.float32))
            n += 100
        elapsed = time.perf_counter() - start
        env.close()
        return n * batch / elapsed

    batch = preset("pendulum").envs_per_worker
    return {"single_env": single_rate(), f"vector_env_{batch}": vector_rate(batch)}


# ----------------------------------------------------------------------------- driver


def child(spec: dict) -> dict:
    if spec["system"] == "keras_a3c":
        return run_keras_a3c(spec)
    if spec["system"] == "env_rates":
        return env_step_rates(spec["seconds"])
    return run_sb3(spec)


def summarise(runs: list[dict], eval_return: float) -> dict:
    return {
        "solved": sum(r["solved"] for r in runs),
        "eval_passed": sum(r["eval_mean"] >= eval_return for r in runs),
        "runs": len(runs),
        **{key: stats([r[key] for r in runs]) for key in (
            "seconds_to_solve", "steps_to_solve", "eval_mean", "seconds", "env_steps", "steps_per_second",
            "sustained_steps_per_second", "peak_rss_mb")},
    }


def print_table(systems: dict[str, dict], rates: dict[str, float], target: float, eval_return: float,
                eval_episodes: int) -> None:
    vector_rate = max(rates.values())
    print(f"\nPendulum-v1, solved = mean of the last {WINDOW} training returns >= {target:g}; eval = deterministic "
          f"policy over {eval_episodes} episodes, passes at >= {eval_return:g}; summary rows: median [min, max]")
    print("raw env steps/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()))
    header = ("system", "seed", "solved", f"time to {target:g} s", f"env steps to {target:g}", "eval mean",
              f"eval >= {eval_return:g}", "train wall-clock s", "env steps", "env steps/s", "x single env",
              "x vector env", "peak RSS MB")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))

    def row(name, seed, solved, passed, r):
        sps = r["steps_per_second"]
        sps_median = sps["median"] if isinstance(sps, dict) else sps
        cells = (
            name, seed, solved, fmt(r["seconds_to_solve"], ".1f"), fmt(r["steps_to_solve"], ",.0f"),
            fmt(r["eval_mean"], ".1f"), passed, fmt(r["seconds"], ".1f"), fmt(r["env_steps"], ",.0f"),
            fmt(sps, ",.0f"), f"{sps_median / rates['single_env']:.3f}", f"{sps_median / vector_rate:.3f}",
            fmt(r["peak_rss_mb"], ".0f"),
        )
        print("| " + " | ".join(cells) + " |")

    for name, entry in systems.items():
        for r in entry["runs"]:
            row(name, str(r["seed"]), "yes" if r["solved"] else "no", "yes" if r["eval_mean"] >= eval_return else "no",
                r)
        s = entry["summary"]
        row(f"**{name}**", "all", f"{s['solved']}/{s['runs']}", f"{s['eval_passed']}/{s['runs']}", s)


def main(argv):
    del argv
    if run_if_child(FLAGS.run, child):
        return
    if FLAGS.peer:
        require_sb3("--peer sb3_a2c")

    pendulum = preset("pendulum")
    if FLAGS.target_return is None:
        FLAGS.target_return = pendulum.target_return
    if FLAGS.max_steps is None:
        FLAGS.max_steps = pendulum.total_steps
    caps = {"max_seconds": FLAGS.max_seconds, "max_steps": FLAGS.max_steps, "target_return": FLAGS.target_return,
              "eval_episodes": FLAGS.eval_episodes}
    workers = FLAGS.workers or pendulum.workers
    variants: dict[str, dict] = {}
    if not FLAGS.skip_default:
        variants[f"keras_a3c {workers} workers"] = {"system": "keras_a3c", "workers": workers}
    for peer in FLAGS.peer:
        variants[peer] = {"system": peer, "sb3_max_steps": FLAGS.sb3_max_steps,
                           "torch_threads": FLAGS.torch_threads}

    rates = in_subprocess(__file__, {"system": "env_rates", "seconds": FLAGS.env_rate_seconds})
    protocol = {"env": ENV_ID, "target_return": FLAGS.target_return, "window": WINDOW,
                "eval_return": FLAGS.eval_return, "eval_episodes": FLAGS.eval_episodes, "eval_seeds": EVAL_SEED,
                "max_seconds": FLAGS.max_seconds, "max_steps": FLAGS.max_steps, "sb3_max_steps": FLAGS.sb3_max_steps}
    systems: dict[str, dict] = {}

    def write():
        with open(FLAGS.json, "w") as f:
            json.dump({"protocol": protocol, "env_steps_per_second": rates, "systems": systems,
                       "cpus": os.cpu_count()}, f, indent=1)

    for name, variant in variants.items():
        runs: list[dict] = []
        systems[name] = {"config": variant, "runs": runs}
        for seed in range(FLAGS.seed_offset, FLAGS.seed_offset + FLAGS.seeds):
            run = {"seed": seed, **in_subprocess(__file__, {**variant, **caps, "seed": seed})}
            print(f"{name} seed {seed}: solved {run['solved']}, {run['seconds_to_solve'] or '-'} s, "
                  f"{run['steps_to_solve'] or '-'} steps to {FLAGS.target_return:g}; stopped after "
                  f"{run['seconds']:.1f} s, {run['env_steps']:,} env steps; eval {run['eval_mean']:.1f} "
                  f"+/- {run['eval_std']:.1f}; peak RSS {run['peak_rss_mb']:.0f} MB", flush=True)
            runs.append(run)
            systems[name]["summary"] = summarise(runs, FLAGS.eval_return)
            write()  # partial results survive an interrupted run
    print_table(systems, rates, FLAGS.target_return, FLAGS.eval_return, FLAGS.eval_episodes)
    write()
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
