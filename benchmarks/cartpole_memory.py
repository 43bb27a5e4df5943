"""CartPole with the velocities hidden (examples/memory_env.py): a recurrent policy against a feedforward one.

    python benchmarks/cartpole_memory.py --json benchmarks/results/cartpole_memory.jsonl
    python benchmarks/cartpole_memory.py --systems sb3_recurrent_ppo --seeds 3    # + sb3-contrib's RecurrentPPO
    python benchmarks/cartpole_memory.py --report --json benchmarks/results/cartpole_memory.jsonl

Systems, one fresh process per run, one run at a time:
  keras_a3c_lstm: `examples/cartpole_memory.py`'s defaults (`keras_a3c.presets.CARTPOLE_MEMORY`: the
    defaults' MLP with an LSTM cell of 64 units), trained for the preset's 1M env steps, exported as a
    SavedModel and played through it (`initial_state`, `serve(observations, state)`).
  keras_a3c_lstm_compiled_acting: the same, but the workers act through one compiled TensorFlow call per
    step (what a network without a numpy twin does) instead of the numpy twin of the LSTM: the acting cost.
  keras_a3c_feedforward: the same network without the LSTM (`--lstm_units=0`), trained as long, played
    through its SavedModel.
  sb3_recurrent_ppo (optional, `pip install sb3-contrib`): RL-Zoo's RecurrentPPO settings for
    CartPoleNoVel-v1 (hyperparams/ppo_lstm.yml: 8 envs, n_steps 32, batch 256, 20 epochs, gamma 0.98, GAE
    0.8, lr and clip range lin_1e-3 / lin_0.2, no entropy bonus, VecNormalize, LSTM 64 for actor and critic,
    pi / vf [64] ReLU, no orthogonal init), for the zoo's 100k env steps (`--sb3_steps`), played with
    `predict(state=, episode_start=)` on the frozen observation statistics.
Each run reports the greedy evaluation over 20 episodes (env seeds 10000..10019), the training wall-clock,
and the env steps at which the mean of the last 100 training returns first reached 475.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))  # after benchmarks/

import memory_env  # noqa: E402  (registers CartPoleNoVelocity-v1)
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from common import EVAL_SEED, fmt, read_runs, report_or_child, run_specs, sb3_learn, solve_point, stats  # noqa: E402

SYSTEMS = ("keras_a3c_lstm", "keras_a3c_lstm_compiled_acting", "keras_a3c_feedforward", "sb3_recurrent_ppo")
BAR = 475.0

FLAGS = flags.FLAGS
flags.DEFINE_list("systems", ["keras_a3c_lstm", "keras_a3c_feedforward"], f"Systems to run, of {SYSTEMS}.")
flags.DEFINE_integer("seeds", 3, "Seeds per system (0..seeds-1).", lower_bound=1)
flags.DEFINE_integer("steps", 0, "keras_a3c env steps; 0 takes the preset's.", lower_bound=0)
flags.DEFINE_integer("sb3_steps", 100_000, "RecurrentPPO env steps (RL-Zoo's budget for the task).", lower_bound=1)
flags.DEFINE_integer("eval_episodes", 20, "Greedy evaluation episodes.", lower_bound=1)
flags.DEFINE_string("json", "benchmarks/results/cartpole_memory.jsonl", "Append each run here (one JSON a line).")
flags.DEFINE_bool("report", False, "Only print the table of the runs in --json.")
flags.DEFINE_string("run", None, "Internal: run one spec (JSON) in this process.")
flags.register_validator("systems", lambda names: set(names) <= set(SYSTEMS), message=f"--systems: one of {SYSTEMS}")


def evaluate(policy, initial_state, episodes: int) -> np.ndarray:
    from keras_a3c.evaluation import evaluate_policy

    return evaluate_policy(policy, memory_env.ENV_ID, episodes, num_envs=episodes, seed=EVAL_SEED,
                           initial_state=initial_state)


def run_keras_a3c(spec: dict) -> dict:
    import dataclasses

    import keras
    import tensorflow as tf

    import keras_a3c

    preset = keras_a3c.presets.get("cartpole_memory")
    if spec["system"] == "keras_a3c_feedforward":
        preset = dataclasses.replace(preset, lstm_units=0)
    if spec["system"] == "keras_a3c_lstm_compiled_acting":
        keras_a3c.trainer.numpy_forward = lambda network: None  # no twin: the compiled call acts
    keras.utils.set_random_seed(spec["seed"])
    start = time.perf_counter()
    agent = preset.make_agent()
    history = agent.fit(preset.env, total_steps=spec["steps"] or preset.total_steps, seed=spec["seed"], verbose=0,
                        **preset.fit_kwargs())
    seconds = time.perf_counter() - start
    episodes = history.episodes
    point = solve_point(episodes["time"], episodes["env_steps"], episodes["return"], BAR)
    with tempfile.TemporaryDirectory() as tmp:
        agent.export(os.path.join(tmp, "policy"))
        policy = tf.saved_model.load(os.path.join(tmp, "policy"))
        if preset.lstm_units:
            returns = evaluate(lambda obs, state: policy.serve(tf.constant(obs), tf.constant(state)),
                               lambda n: policy.initial_state(tf.constant(n, tf.int32)), spec["eval_episodes"])
        else:
            returns = evaluate(lambda obs: policy.serve(tf.constant(obs)), None, spec["eval_episodes"])
    return {"seconds": seconds, "env_steps": agent.env_steps, "steps_to_475": point[1] if point else None,
            "seconds_to_475": point[0] if point else None, "returns": returns.tolist(),
            "final_train_mean": float(np.mean(episodes["return"][-100:])),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_sb3_recurrent_ppo(spec: dict) -> dict:
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    def linear(initial: float):
        return lambda progress_remaining: progress_remaining * initial

    log: dict[str, list] = {"time": [], "env_steps": [], "return": []}
    start = time.perf_counter()

    class Episodes(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    log["time"].append(time.perf_counter() - start)
                    log["env_steps"].append(self.num_timesteps)
                    log["return"].append(info["episode"]["r"])
            return True

    env = VecNormalize(make_vec_env(memory_env.ENV_ID, n_envs=8, seed=spec["seed"]), gamma=0.98)
    model = RecurrentPPO(
        "MlpLstmPolicy", env, n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, ent_coef=0.0,
        learning_rate=linear(1e-3), clip_range=linear(0.2), seed=spec["seed"], device="cpu", verbose=0,
        policy_kwargs={"ortho_init": False, "activation_fn": torch.nn.ReLU, "lstm_hidden_size": 64,
                       "enable_critic_lstm": True, "net_arch": {"pi": [64], "vf": [64]}})
    sb3_learn(model, total_timesteps=spec["sb3_steps"], callback=Episodes())
    seconds = time.perf_counter() - start
    env.training = False
    point = solve_point(log["time"], log["env_steps"], log["return"], BAR)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def policy(obs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Our state [B, 128] is SB3's (h, c), each [1, B, 64]; a zero row begins an episode.
        h, c = (part[None] for part in np.split(state, 2, axis=1))
        actions, (h, c) = model.predict(env.normalize_obs(obs), state=(h, c), deterministic=True,
                                        episode_start=np.zeros(len(obs), bool))
        return actions, np.concatenate([h[0], c[0]], axis=1)

    returns = evaluate(policy, lambda n: np.zeros((n, 128), np.float32), spec["eval_episodes"])
    return {"seconds": seconds, "env_steps": int(model.num_timesteps), "steps_to_475": point[1] if point else None,
            "seconds_to_475": point[0] if point else None, "returns": returns.tolist(),
            "final_train_mean": float(np.mean(log["return"][-100:])), "torch_threads": torch.get_num_threads(),
            "peak_rss_mb": peak}


def one_run(spec: dict) -> dict:
    run = (run_sb3_recurrent_ppo if spec["system"] == "sb3_recurrent_ppo" else run_keras_a3c)(spec)
    return {**spec, **run, "eval_mean": float(np.mean(run["returns"])), "eval_std": float(np.std(run["returns"]))}


def report(path: str) -> str:
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in read_runs(path):
        groups.setdefault((run["system"], run["steps"] or run["sb3_steps"]), []).append(run)
    lines = ["| system | env steps | seeds with greedy >= 475 | greedy eval, 20 episodes: median [min, max] | "
             "training mean 475 reached at env steps: median [min, max] | ... at seconds | training s | env steps/s |",
             "|" + " --- |" * 8]
    for (system, _), group in sorted(groups.items(), key=lambda kv: (SYSTEMS.index(kv[0][0]), kv[0][1])):
        reached = sum(r["steps_to_475"] is not None for r in group)
        lines.append(
            f"| {system} | {group[0]['env_steps']:,} | {sum(r['eval_mean'] >= BAR for r in group)}/{len(group)} | "
            f"{fmt(stats([r['eval_mean'] for r in group]), '.1f')} | "
            f"{fmt(stats([r['steps_to_475'] for r in group]), ',.0f')} ({reached}/{len(group)}) | "
            f"{fmt(stats([r['seconds_to_475'] for r in group]), '.0f')} | "
            f"{fmt(stats([r['seconds'] for r in group]), '.0f')} | "
            f"{fmt(stats([r['env_steps'] / r['seconds'] for r in group])['median'], ',.0f')} |")
    return "\n".join(lines)


def main(argv):
    del argv
    if report_or_child(FLAGS.report, FLAGS.json, report, FLAGS.run, one_run):
        return
    specs = [{"system": system, "seed": seed, "steps": FLAGS.steps, "sb3_steps": FLAGS.sb3_steps,
              "eval_episodes": FLAGS.eval_episodes} for seed in range(FLAGS.seeds) for system in FLAGS.systems]
    for run in run_specs(__file__, specs, FLAGS.json):
        print(f"{run['system']} seed {run['seed']}: greedy {run['eval_mean']:.1f} +/- {run['eval_std']:.1f} after "
              f"{run['env_steps']:,} env steps, {run['seconds']:.0f} s; training mean 475 at "
              f"{run['steps_to_475']} env steps", flush=True)
    print(report(FLAGS.json))


if __name__ == "__main__":
    app.run(main)
