"""Sweep candidate default settings over tasks and seeds: train within a budget of env steps, then
evaluate the greedy policy.

    python benchmarks/sweep.py --env Acrobot-v1 --candidates library,normalised --seeds 5
    python benchmarks/sweep.py --env CartPole-v1 --candidates normalised --seeds 30 --steps 1000000

Each run is a fresh process: `keras.utils.set_random_seed(seed)`, the candidate's network
(`actor_critic_mlp` with its options), optimizer and `A3CConfig`, `fit(env, budget, seed=seed)` with
the candidate's workers and envs per worker, then `evaluate` of the greedy policy over 20 episodes
(env seeds 10000 + i). A run passes at the task's bar (the suite of the defaults issue: CartPole-v1
475, Acrobot-v1 -100, LunarLander-v3 200, Pendulum-v1 -200). Prints one row per run and a summary
per candidate, and appends every run to `--json`.
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
    SUITE,
    append_run,
    evaluate_episodes,
    fmt,
    in_subprocess,
    read_runs,
    report_or_child,
    stats,
)

# Candidates (all but "defaults" pinned to the settings they ran with): the optimizer (name, learning
# rate, epsilon, updates over which the learning rate decays linearly to 0, as in the A3C paper; 0 keeps
# it constant) and optionally more of its settings ("optimizer_config"), the A3CConfig fields, the network
# options and the fit shape.
_NORMALISED = {
    "optimizer": ("adam", 7e-4, 1e-5, 0),
    "config": {"normalize_rewards": True, "gae_lambda": 0.95, "max_grad_norm": 0.5, "gamma": 0.99,
               "entropy_coef": 0.01, "n_steps": 5, "action_bound_coef": 0.0},
    "network": {"normalize_observations": True},
    "workers": 8, "envs": 8,
}
CANDIDATES: dict[str, dict] = {
    # The library's defaults, literally: A3C(actor_critic_mlp(obs_space, action_space)), compile(), fit(env, steps).
    "defaults": {"optimizer": None, "config": {}, "network": {}, "workers": 8, "envs": 8},
    # What compile() and actor_critic_mlp() give without arguments, before normalisation existed.
    "library": {"optimizer": ("rmsprop", 1e-3, None, 0), "network": {}, "workers": 8, "envs": 8,
                "config": {"n_steps": 5, "gamma": 0.99, "entropy_coef": 0.01, "max_grad_norm": None,
                           "gae_lambda": 1.0, "normalize_rewards": False, "action_bound_coef": 0.0}},
    "normalised": _NORMALISED,
    "normalised_lr3e-4": {**_NORMALISED, "optimizer": ("adam", 3e-4, 1e-5, 0)},
    "normalised_advnorm": {**_NORMALISED, "config": {**_NORMALISED["config"], "normalize_advantages": True}},
    # The library's defaults spelled out as they were before the LunarLander sweep (n_steps 5, gamma 0.99,
    # entropy 0.01); "defaults" runs what they are now.
    "normalised_rmsprop": {**_NORMALISED, "optimizer": ("rmsprop", 7e-4, 1e-5, 0)},
    # The defaults of the LunarLander sweep's third step (n_steps 5, gamma 0.995, entropy 0.001), RMSprop 1e-3.
    "defaults_lr1e-3": {"optimizer": ("rmsprop", 1e-3, 1e-5, 0),
                        "config": {"n_steps": 5, "gamma": 0.995, "action_bound_coef": 0.0},
                        "network": {}, "workers": 8, "envs": 8},
    # The defaults with the learning rate annealed to 0 over LunarLander's 3M env steps (40 per update).
    "annealed_ll": {**_NORMALISED, "optimizer": ("rmsprop", 7e-4, 1e-5, 75_000)},
    # The defaults with RMSprop's rho 0.99 (the A3C paper's decay, PyTorch's and SB3's alpha) for Keras's 0.9.
    "defaults_rho0.99": {"optimizer": ("rmsprop", 7e-4, 1e-5, 0), "optimizer_config": {"rho": 0.99},
                         "config": {}, "network": {}, "workers": 8, "envs": 8},
    # The defaults with the learning rate annealed to 0 over Acrobot's 500k env steps (128 per update).
    "annealed_acrobot": {"optimizer": ("rmsprop", 7e-4, 1e-5, 3_907), "config": {}, "network": {}, "workers": 8,
                         "envs": 8},
    # The same from twice the learning rate.
    "annealed_acrobot_lr1.4e-3": {"optimizer": ("rmsprop", 1.4e-3, 1e-5, 3_907), "config": {}, "network": {},
                                  "workers": 8, "envs": 8},
    # The defaults with twice their learning rate.
    "defaults_lr1.4e-3": {"optimizer": ("rmsprop", 1.4e-3, 1e-5, 0), "config": {}, "network": {}, "workers": 8,
                          "envs": 8},
}

FLAGS = flags.FLAGS
flags.DEFINE_string("env", "Acrobot-v1", "Task of the suite: " + ", ".join(SUITE))
flags.DEFINE_list("candidates", ["normalised"], "Candidates to run: " + ", ".join(CANDIDATES))
flags.DEFINE_integer("seeds", 5, "Seeds seed_offset .. seed_offset + seeds - 1 per candidate.", lower_bound=1)
flags.DEFINE_integer("seed_offset", 0, "First seed.")
flags.DEFINE_integer("steps", None, "Env-step budget (default: the suite's for the task).", lower_bound=1)
flags.DEFINE_integer("eval_episodes", 20, "Greedy evaluation episodes.", lower_bound=1)
flags.DEFINE_string("overrides", "{}", "JSON: A3CConfig fields to set on every candidate (for quick what-ifs).")
flags.DEFINE_string("json", "sweep.json", "Append every run here (one JSON object a line).")
flags.DEFINE_bool("report", False, "Only print a markdown table of the runs in --json, per task and candidate.")
flags.DEFINE_string("run", None, "Internal: one run in this process (JSON spec).")
flags.register_validator("env", lambda env: env in SUITE, message="--env must be a task of the suite")
flags.register_validator("candidates", lambda names: all(n in CANDIDATES for n in names),
                         message="unknown candidate")


def one_run(spec: dict) -> dict:
    import gymnasium as gym
    import keras

    import keras_a3c

    candidate = CANDIDATES[spec["candidate"]]
    keras.utils.set_random_seed(spec["seed"])
    env = gym.make(spec["env"])
    network = keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, **candidate["network"])
    agent = keras_a3c.A3C(network)
    optimizer = None  # compile()'s default
    if candidate["optimizer"] is not None:
        name, learning_rate, epsilon, decay_updates = candidate["optimizer"]
        if decay_updates:
            learning_rate = keras.optimizers.schedules.PolynomialDecay(learning_rate, decay_updates, 0.0)
        optimizer = keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate,
                                                                          **candidate.get("optimizer_config", {})}})
        if epsilon is not None:
            optimizer.epsilon = epsilon
    agent.compile(optimizer, **{**candidate["config"], **spec["overrides"]})
    start = time.perf_counter()
    history = agent.fit(spec["env"], total_steps=spec["steps"], workers=candidate["workers"],
                        envs_per_worker=candidate["envs"], seed=spec["seed"], verbose=0)
    seconds = time.perf_counter() - start
    returns = evaluate_episodes(keras_a3c.acting.policy_function(agent.network, agent.action_space), spec["env"],
                                spec["eval_episodes"])
    last = {k: v[-1] for k, v in history.history.items()}
    return {**spec, "seconds": seconds, "env_steps": agent.env_steps, "eval_mean": float(np.mean(returns)),
            "train_mean": last["episode_return"], "entropy": last["entropy"],
            "steps_per_second": agent.env_steps / seconds}


def report(path: str) -> str:
    """A markdown table of the runs in `path`: per task and candidate, the passes and each seed's score."""
    groups: dict[tuple, list[dict]] = {}
    for run in read_runs(path):
        groups.setdefault((run["env"], run["candidate"], json.dumps(run["overrides"]), run["steps"]), []).append(run)
    lines = ["| task | candidate | env steps | passed | greedy eval, 20 episodes: median [min, max] | per seed "
             "(seed: eval) | training s, median | env steps/s, median |", "|" + " --- |" * 8]
    for (env, name, overrides, steps), group in groups.items():
        group.sort(key=lambda r: r["seed"])
        label = name + ("" if overrides == "{}" else f" {overrides}")
        passed = sum(r["eval_mean"] >= SUITE[env][1] for r in group)
        seeds = ", ".join(f"{r['seed']}: {r['eval_mean']:.1f}" for r in group)
        lines.append(f"| {env} (bar {SUITE[env][1]:g}) | {label} | {steps:,} | {passed}/{len(group)} | "
                     f"{fmt(stats([r['eval_mean'] for r in group]), '.1f')} | {seeds} | "
                     f"{fmt(stats([r['seconds'] for r in group]), '.0f')} | "
                     f"{fmt(stats([r['steps_per_second'] for r in group]), ',.0f')} |")
    return "\n".join(lines)


def main(argv):
    del argv
    if report_or_child(FLAGS.report, FLAGS.json, report, FLAGS.run, one_run):
        return
    budget, bar = SUITE[FLAGS.env]
    steps = FLAGS.steps or budget
    overrides = json.loads(FLAGS.overrides)
    print(f"{FLAGS.env}: {steps:,} env steps, greedy eval over {FLAGS.eval_episodes} episodes, bar {bar:g}")
    for name in FLAGS.candidates:
        runs = []
        for seed in range(FLAGS.seed_offset, FLAGS.seed_offset + FLAGS.seeds):
            spec = {"env": FLAGS.env, "candidate": name, "seed": seed, "steps": steps,
                    "eval_episodes": FLAGS.eval_episodes, "overrides": overrides}
            run = in_subprocess(__file__, spec)
            run["passed"] = run["eval_mean"] >= bar
            runs.append(run)
            append_run(FLAGS.json, run)
            print(f"  {name} seed {seed}: eval {run['eval_mean']:.1f} ({'pass' if run['passed'] else 'FAIL'}), "
                  f"train mean {run['train_mean']:.1f}, entropy {run['entropy']:.3f}, {run['seconds']:.0f} s, "
                  f"{run['steps_per_second']:,.0f} steps/s", flush=True)
        print(f"{name} {overrides or ''}: {sum(r['passed'] for r in runs)}/{len(runs)} pass, eval "
              f"{fmt(stats([r['eval_mean'] for r in runs]), '.1f')}, seconds "
              f"{fmt(stats([r['seconds'] for r in runs]), '.0f')}", flush=True)


if __name__ == "__main__":
    app.run(main)
