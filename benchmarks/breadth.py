"""keras_a3c's defaults against Stable-Baselines3 A2C with RL-Zoo's settings, on every task of the suite.

    python benchmarks/breadth.py --seeds 1 --json benchmarks/results/breadth.jsonl
    python benchmarks/breadth.py --report --json benchmarks/results/breadth.jsonl   # the README's table

Per task (`common.SUITE`: CartPole-v1 1M env steps, Acrobot-v1 500k, LunarLander-v3 3M, Pendulum-v1 3M)
and seed, each system trains for the same number of env steps in a fresh process, one run after the
other, then its greedy policy plays the same 20 episodes (`keras_a3c.evaluate_policy`, env seeds
10000-10019); the table compares the mean return of those episodes and the training wall-clock.

- keras_a3c: the library's defaults, `A3C(actor_critic_mlp(obs_space, action_space))`, `compile()`,
  `fit(env, total_steps, seed=seed)`.
- sb3_a2c: `stable_baselines3.A2C` with RL-Zoo's hyperparameters for the task (`common.sb3_a2c_zoo`),
  `VecNormalize` where the zoo normalises (its observation statistics frozen for the evaluation),
  torch on the CPU. Needs
  `pip install torch==2.13.0 stable-baselines3` (a CPU build; see the README).
"""

from __future__ import annotations

import os
import resource
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from common import (  # noqa: E402
    SUITE,
    evaluate_episodes,
    fmt,
    read_runs,
    report_or_child,
    require_sb3,
    run_specs,
    sb3_a2c_zoo,
    sb3_learn,
    stats,
)

SYSTEMS = ("keras_a3c", "sb3_a2c")


FLAGS = flags.FLAGS
flags.DEFINE_list("envs", list(SUITE), "Tasks of the suite to run: " + ", ".join(SUITE))
flags.DEFINE_list("systems", list(SYSTEMS), "Systems to run: " + ", ".join(SYSTEMS))
flags.DEFINE_integer("seeds", 1, "Seeds seed_offset .. seed_offset + seeds - 1 per task and system.", lower_bound=1)
flags.DEFINE_integer("seed_offset", 0, "First seed.")
flags.DEFINE_integer("steps", None, "Env-step budget for every task (default: the suite's budget of each task).",
                     lower_bound=1)
flags.DEFINE_integer("eval_episodes", 20, "Greedy evaluation episodes.", lower_bound=1)
flags.DEFINE_string("json", "breadth.jsonl", "Append every run here (one JSON object a line).")
flags.DEFINE_bool("report", False, "Only print a markdown table of the runs in --json.")
flags.DEFINE_string("run", None, "Internal: one run in this process (JSON spec).")
flags.register_validator("envs", lambda envs: all(e in SUITE for e in envs),
                         message="--envs must be tasks of the suite")
flags.register_validator("systems", lambda names: all(n in SYSTEMS for n in names), message="unknown system")


def run_keras_a3c(spec: dict) -> tuple[dict, object]:
    import gymnasium as gym
    import keras

    import keras_a3c

    keras.utils.set_random_seed(spec["seed"])
    env = gym.make(spec["env"])
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space))
    agent.compile()
    start = time.perf_counter()
    agent.fit(spec["env"], total_steps=spec["steps"], seed=spec["seed"], verbose=0)
    seconds = time.perf_counter() - start
    run = {"seconds": seconds, "env_steps": agent.env_steps,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return run, keras_a3c.acting.policy_function(agent.network, agent.action_space)


def run_sb3(spec: dict) -> tuple[dict, object]:
    import stable_baselines3
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    n_envs, normalize, kwargs = sb3_a2c_zoo(spec["env"])
    start = time.perf_counter()
    env = make_vec_env(spec["env"], n_envs=n_envs, seed=spec["seed"])
    if normalize:
        env = VecNormalize(env, gamma=kwargs.get("gamma", 0.99))
    model = stable_baselines3.A2C("MlpPolicy", env, seed=spec["seed"], device="cpu", verbose=0, **kwargs)
    sb3_learn(model, total_timesteps=spec["steps"])
    seconds = time.perf_counter() - start
    # Peak RSS before the evaluation imports keras_a3c (and so TensorFlow).
    run = {"seconds": seconds, "env_steps": int(model.num_timesteps), "torch_threads": torch.get_num_threads(),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if normalize:
        env.training = False  # frozen observation statistics

    def policy(obs: np.ndarray) -> np.ndarray:
        return model.predict(env.normalize_obs(obs) if normalize else obs, deterministic=True)[0]

    return run, policy


def one_run(spec: dict) -> dict:
    run, policy = (run_keras_a3c if spec["system"] == "keras_a3c" else run_sb3)(spec)
    returns = evaluate_episodes(policy, spec["env"], spec["eval_episodes"])
    return {**spec, **run, "eval_mean": float(np.mean(returns)), "eval_std": float(np.std(returns)),
            "steps_per_second": run["env_steps"] / run["seconds"]}


def report(path: str) -> str:
    """A markdown table of the runs in `path`: per task, each system's greedy evaluation and wall-clock."""
    groups: dict[tuple, list[dict]] = {}
    for run in read_runs(path):
        groups.setdefault((run["env"], run["steps"], run["system"]), []).append(run)
    lines = ["| task (bar) | env steps | system | seeds passed | greedy eval, 20 episodes: median [min, max] | "
             "training s: median [min, max] | env steps/s, median | peak RSS MB, median |", "|" + " --- |" * 8]
    for (env, steps, system), group in sorted(groups.items(), key=lambda kv: (list(SUITE).index(kv[0][0]), kv[0][1:])):
        bar = SUITE[env][1]
        passed = sum(r["eval_mean"] >= bar for r in group)
        lines.append(
            f"| {env} ({bar:g}) | {steps:,} | {system} | {passed}/{len(group)} | "
            f"{fmt(stats([r['eval_mean'] for r in group]), '.1f')} | "
            f"{fmt(stats([r['seconds'] for r in group]), '.0f')} | "
            f"{fmt(stats([r['steps_per_second'] for r in group])['median'], ',.0f')} | "
            f"{fmt(stats([r['peak_rss_mb'] for r in group])['median'], '.0f')} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    if report_or_child(FLAGS.report, FLAGS.json, report, FLAGS.run, one_run):
        return
    if "sb3_a2c" in FLAGS.systems:
        require_sb3("sb3_a2c")
    for env_id in FLAGS.envs:
        steps = FLAGS.steps or SUITE[env_id][0]
        specs = [{"env": env_id, "system": system, "seed": seed, "steps": steps, "eval_episodes": FLAGS.eval_episodes}
                 for seed in range(FLAGS.seed_offset, FLAGS.seed_offset + FLAGS.seeds) for system in FLAGS.systems]
        for run in run_specs(__file__, specs, FLAGS.json):
            print(f"{env_id} {run['system']} seed {run['seed']}: eval {run['eval_mean']:.1f} +/- "
                  f"{run['eval_std']:.1f} after {run['env_steps']:,} env steps, {run['seconds']:.0f} s "
                  f"({run['steps_per_second']:,.0f} steps/s)", flush=True)
    print(report(FLAGS.json))


if __name__ == "__main__":
    app.run(main)
