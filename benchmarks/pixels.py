"""Learning from pixels: env steps/s while learning, and MinAtar Breakout's time to a training mean of 15,
keras_a3c against Stable-Baselines3 A2C on the same observations, one run after the other.

    pip install minatar==1.0.15 ale-py==0.12.1 opencv-python-headless torch==2.13.0 stable-baselines3
    python benchmarks/pixels.py --json benchmarks/results/pixels.jsonl
    python benchmarks/pixels.py --report --json benchmarks/results/pixels.jsonl   # the README's table

Tasks (each run in a fresh process; every finished training episode is logged with its time and env step):
- minatar: `MinAtar/Breakout-v1` ([10, 10, 4] bool). A run stops when the mean return of the last 100
  training episodes first reaches --minatar_target (15), or at --minatar_seconds.
- pong: `AtariA3C/Pong-v5` (examples/atari_env.py: the A3C paper's preprocessing, [84, 84, 4] uint8). A run
  stops at --pong_seconds; it measures throughput while learning, not learning.

Systems:
- keras_a3c: the example's preset (`keras_a3c.presets.MINATAR` / `ATARI`: the examples' defaults),
  `preset.make_agent()`, `fit` with the preset's workers and envs per worker.
- sb3_a2c: `stable_baselines3.A2C` with RL-Zoo's Atari settings (hyperparams/a2c.yml `atari`: 16 envs, entropy
  0.01, value coefficient 0.25, RMSpropTFLike with epsilon 1e-5; the rest A2C's defaults: 5 steps, 7e-4), on
  the same env: `CnnPolicy` on Pong's frames (SB3 moves the channels first itself), and on MinAtar, whose
  10x10 grid is too small for its CNN, `MlpPolicy` with two layers of 256 on the flattened grid (as gymnax's
  baselines). Torch on the CPU, its default threads.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from common import (  # noqa: E402
    WINDOW,
    fmt,
    read_runs,
    report_or_child,
    require_sb3,
    run_result,
    run_specs,
    sb3_episode_log,
    sb3_learn,
    stop_at_seconds,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = {"minatar": ("MinAtar/Breakout-v1", "minatar"), "pong": ("AtariA3C/Pong-v5", "atari")}  # env id, preset
SYSTEMS = ("keras_a3c", "sb3_a2c")

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", list(TASKS), "Tasks to run: " + ", ".join(TASKS))
flags.DEFINE_list("systems", list(SYSTEMS), "Systems to run: " + ", ".join(SYSTEMS))
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_float("minatar_target", 15.0, "MinAtar runs stop once the training mean of the last 100 reaches this.")
flags.DEFINE_float("minatar_seconds", 1200.0, "Wall-clock cap of a MinAtar run (s).", lower_bound=0.0)
flags.DEFINE_float("pong_seconds", 120.0, "Wall-clock of a Pong run (s).", lower_bound=0.0)
flags.DEFINE_string("json", "pixels.jsonl", "Append every run here (one JSON object a line).")
flags.DEFINE_bool("report", False, "Only print a markdown table of the runs in --json.")
flags.DEFINE_string("run", None, "Internal: one run in this process (JSON spec).")
flags.register_validator("tasks", lambda names: all(n in TASKS for n in names), message="unknown task")
flags.register_validator("systems", lambda names: all(n in SYSTEMS for n in names), message="unknown system")


def register_envs(task: str) -> None:
    """Register the task's gymnasium ids (MinAtar's on request; examples/atari_env.py's on import)."""
    if task == "minatar":
        from minatar.gym import register_envs as register_minatar

        register_minatar()
    else:
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        import atari_env  # noqa: F401


def run_keras_a3c(spec: dict) -> dict:
    import keras

    import keras_a3c

    start = time.perf_counter()
    keras.utils.set_random_seed(spec["seed"])
    preset = keras_a3c.presets.get(TASKS[spec["task"]][1])
    agent = preset.make_agent()
    callbacks = [stop_at_seconds(spec["seconds"])]
    if spec["target"] is not None:
        callbacks.append(keras_a3c.StopOnMeanReturn(spec["target"], min_episodes=WINDOW))
    fit_start = time.perf_counter()
    history = agent.fit(preset.env, total_steps=10**9, seed=spec["seed"], verbose=0, callbacks=callbacks,
                        **preset.fit_kwargs())
    end = time.perf_counter()
    seconds, fit_seconds = end - start, end - fit_start
    log = history.episodes
    return run_result(log["time"] + (fit_start - start), log["env_steps"], log["return"], agent.env_steps, seconds,
                      target=spec["target"] or float("inf"), learning_seconds=fit_seconds,
                      learning_steps_per_second=agent.env_steps / fit_seconds,
                      setting=f"{preset.workers} workers x {preset.envs_per_worker} envs, {preset.network} network")


def run_sb3(spec: dict) -> dict:
    import stable_baselines3
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    start = time.perf_counter()
    log = sb3_episode_log(start, spec["seconds"], spec["target"])
    policy_kwargs = {"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": 1e-5}}
    if spec["task"] == "minatar":
        policy, policy_kwargs["net_arch"] = "MlpPolicy", [256, 256]
    else:
        policy = "CnnPolicy"
    env = make_vec_env(TASKS[spec["task"]][0], n_envs=16, seed=spec["seed"])
    model = stable_baselines3.A2C(policy, env, ent_coef=0.01, vf_coef=0.25, policy_kwargs=policy_kwargs,
                                  seed=spec["seed"], device="cpu", verbose=0)
    sb3_learn(model, total_timesteps=10**9, callback=log)
    end = time.perf_counter()
    seconds, learning_seconds = end - start, end - log.learn_start
    return run_result(log.times, log.steps, log.returns, model.num_timesteps, seconds,
                      target=spec["target"] or float("inf"),
                      learning_seconds=learning_seconds,
                      learning_steps_per_second=model.num_timesteps / learning_seconds,
                      setting=f"16 envs, {policy}", torch_threads=torch.get_num_threads())


def one_run(spec: dict) -> dict:
    register_envs(spec["task"])
    run = (run_keras_a3c if spec["system"] == "keras_a3c" else run_sb3)(spec)
    return {**spec, **run}


def report(path: str) -> str:
    """A markdown table of the runs in `path`: per task and system, throughput and time to the target."""
    lines = ["| task | system | setting | env steps | learning s | env steps/s while learning | "
             "training mean (last 100) >= target at | best training mean |", "|" + " --- |" * 8]
    for run in sorted(read_runs(path), key=lambda r: (list(TASKS).index(r["task"]), SYSTEMS.index(r["system"]))):
        if run["target"] is None:
            reached = "-"
        elif run["solved"]:
            reached = f"{run['target']:g}: {run['seconds_to_solve']:.0f} s, {run['steps_to_solve']:,} env steps"
        else:
            reached = f"{run['target']:g}: not within {run['learning_seconds']:.0f} s"
        lines.append(
            f"| {TASKS[run['task']][0]} | {run['system']} | {run['setting']} | {run['env_steps']:,} | "
            f"{run['learning_seconds']:.0f} | {run['learning_steps_per_second']:,.0f} | {reached} | "
            f"{fmt(run['best_mean_return'], '.1f')} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    if report_or_child(FLAGS.report, FLAGS.json, report, FLAGS.run, one_run):
        return
    if "sb3_a2c" in FLAGS.systems:
        require_sb3("sb3_a2c")
    specs = [{"task": task, "system": system, "seed": FLAGS.seed,
              "seconds": FLAGS.minatar_seconds if task == "minatar" else FLAGS.pong_seconds,
              "target": FLAGS.minatar_target if task == "minatar" else None}
             for task in FLAGS.tasks for system in FLAGS.systems]
    for run in run_specs(__file__, specs, FLAGS.json):
        print(f"{run['task']} {run['system']}: {run['env_steps']:,} env steps in {run['learning_seconds']:.0f} s "
              f"({run['learning_steps_per_second']:,.0f} steps/s), training mean reached the target: "
              f"{run['solved'] if run['target'] is not None else '-'}", flush=True)
    print(report(FLAGS.json))


if __name__ == "__main__":
    app.run(main)
