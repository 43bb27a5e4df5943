"""Where a Gaussian policy's mean goes on Pendulum-v1: the library's defaults with and without the action
bound loss, the policy's mean logged every epoch on fixed states.

    python benchmarks/pendulum_drift.py --seeds 6 --action_bound_coef 0 --json benchmarks/results/pendulum_drift.jsonl
    python benchmarks/pendulum_drift.py --seeds 4 --seed_offset 6 --action_bound_coef 1 \
        --json benchmarks/results/pendulum_drift.jsonl

Each run is a fresh process: `A3C(actor_critic_mlp(obs_space, action_space))`, `compile(action_bound_coef=c)`
(the rest the defaults), `fit("Pendulum-v1", --steps, seed=seed)`; after every epoch (10k env steps) it
logs the training logs and, on 256 fixed states (angle and angular velocity uniform in [-pi, pi] x
[-8, 8]), the mean |mean| of the Gaussian, the fraction of states whose mean lies outside the action
bounds [-2, 2], and the mean log std; then the greedy policy plays 20 episodes (env seeds 10000-10019).
Runs go two at a time on the 2 cores; each appends one line to --json. Prints one row per run.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from common import evaluate_episodes, run_if_child, run_specs  # noqa: E402

ENV_ID = "Pendulum-v1"
BOUND = 2.0  # Pendulum's torque bound

FLAGS = flags.FLAGS
flags.DEFINE_integer("seeds", 2, "Seeds seed_offset .. seed_offset + seeds - 1.", lower_bound=1)
flags.DEFINE_integer("seed_offset", 0, "First seed.")
flags.DEFINE_integer("steps", 3_000_000, "Env steps per run.", lower_bound=1)
flags.DEFINE_float("action_bound_coef", 1.0, "A3CConfig.action_bound_coef of every run.", lower_bound=0.0)
flags.DEFINE_integer("parallel", 2, "Runs at a time.", lower_bound=1)
flags.DEFINE_string("json", "pendulum_drift.jsonl", "Append every run here (one JSON object a line).")
flags.DEFINE_string("run", None, "Internal: one run in this process (JSON spec).")


def fixed_states() -> np.ndarray:
    """256 Pendulum observations (cos, sin, angular velocity), the same for every run: [256, 3]."""
    rng = np.random.default_rng(0)
    angle, velocity = rng.uniform(-np.pi, np.pi, 256), rng.uniform(-8.0, 8.0, 256)
    return np.stack([np.cos(angle), np.sin(angle), velocity], axis=1).astype(np.float32)


def run_one(spec: dict) -> dict:
    import gymnasium as gym
    import keras

    from keras_a3c import A3C, actor_critic_mlp

    keras.utils.set_random_seed(spec["seed"])
    env = gym.make(ENV_ID)
    agent = A3C(actor_critic_mlp(env.observation_space, env.action_space))
    agent.compile(action_bound_coef=spec["action_bound_coef"])
    states, epochs = fixed_states(), []

    class LogPolicy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            mean, log_std = np.split(np.asarray(agent.network(states)[0]), 2, axis=1)
            row = {"episode_return": logs["episode_return"], "entropy": logs["entropy"],
                   "mean_abs_mean": np.abs(mean).mean(), "outside_bounds": (np.abs(mean) > BOUND).mean(),
                   "log_std": log_std.mean()}
            epochs.append({"env_steps": int(logs["env_steps"]), **{k: round(float(v), 4) for k, v in row.items()}})

    start = time.perf_counter()
    agent.fit(ENV_ID, spec["steps"], seed=spec["seed"], callbacks=[LogPolicy()], verbose=0)
    seconds = time.perf_counter() - start
    returns = evaluate_episodes(lambda obs: agent.predict(obs, deterministic=True), ENV_ID, 20)
    return {**spec, "seconds": seconds, "eval_mean": float(np.mean(returns)), "epochs": epochs}


def main(argv):
    del argv
    if run_if_child(FLAGS.run, run_one):
        return
    specs = [{"seed": seed, "steps": FLAGS.steps, "action_bound_coef": FLAGS.action_bound_coef}
             for seed in range(FLAGS.seed_offset, FLAGS.seed_offset + FLAGS.seeds)]
    for result in run_specs(__file__, specs, FLAGS.json, FLAGS.parallel):
        late = result["epochs"][len(result["epochs"]) // 2:]
        print(f"seed {result['seed']} action_bound_coef {result['action_bound_coef']}: eval "
              f"{result['eval_mean']:.1f}; second half: outside the bounds at most "
              f"{max(e['outside_bounds'] for e in late):.0%}, mean |mean| at most "
              f"{max(e['mean_abs_mean'] for e in late):.2f}; {result['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    app.run(main)
