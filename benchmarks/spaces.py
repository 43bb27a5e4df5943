"""The spaces beyond Box / Discrete, trained with the library's defaults and served from every export format.

    python benchmarks/spaces.py --seeds 3 --json benchmarks/results/spaces.jsonl

Three tasks, each run in a fresh process per seed: `A3C(actor_critic_mlp(obs_space, action_space))`,
`compile()`, `fit(task, --steps, seed=seed)` (8 workers x 8 envs), then the greedy policy plays 20
episodes (env seeds 10000-10019), and the SavedModel, ONNX and TFLite exports are asked for the actions
of the observations of those episodes: each must give `predict`'s actions.
  dict_cartpole:    CartPole-v1 observed as a Dict {"position": [x, theta], "velocity": [x', theta']}.
  multidiscrete:    observe 4 targets, one per part of MultiDiscrete([3, 4, 5, 6]); reward 1 per part
                    hit, 10 steps an episode (best 40, uniform ~9.5).
  masked:           Discrete(6) with an `action_mask` entry (3 valid actions a step, one rewarded: best 10,
                    uniform over the valid ones 3.3); an invalid action would end the episode at -1.
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from common import EVAL_SEED, run_if_child, run_specs  # noqa: E402

FLAGS = flags.FLAGS
TASKS = {"dict_cartpole": 500_000, "multidiscrete": 100_000, "masked": 100_000}
flags.DEFINE_list("tasks", list(TASKS), "Tasks to run: " + ", ".join(TASKS))
flags.DEFINE_integer("seeds", 1, "Seeds seed_offset .. seed_offset + seeds - 1 per task.", lower_bound=1)
flags.DEFINE_integer("seed_offset", 0, "First seed.")
flags.DEFINE_integer("steps", None, "Env steps per run (default: the task's own).", lower_bound=1)
flags.DEFINE_integer("parallel", 2, "Runs at a time.", lower_bound=1)
flags.DEFINE_string("json", "spaces.jsonl", "Append every run here (one JSON object a line).")
flags.DEFINE_string("run", None, "Internal: one run in this process (JSON spec).")
flags.register_validator("tasks", lambda names: all(n in TASKS for n in names), message="unknown task")


class DictCartPole(gym.ObservationWrapper):
    def __init__(self):
        super().__init__(gym.make("CartPole-v1"))
        low, high = self.env.observation_space.low, self.env.observation_space.high
        self.observation_space = gym.spaces.Dict({
            "position": gym.spaces.Box(low[[0, 2]], high[[0, 2]], (2,), np.float32),
            "velocity": gym.spaces.Box(low[[1, 3]], high[[1, 3]], (2,), np.float32)})

    def observation(self, observation):
        return {"position": observation[[0, 2]], "velocity": observation[[1, 3]]}


class MultiTarget(gym.Env):
    nvec = (3, 4, 5, 6)

    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (sum(self.nvec),), np.float32)
        self.action_space = gym.spaces.MultiDiscrete(self.nvec)

    def _observe(self):
        self.target = np.array([self.np_random.integers(n) for n in self.nvec])
        return np.concatenate([np.eye(n, dtype=np.float32)[t] for n, t in zip(self.nvec, self.target, strict=True)])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observe(), {}

    def step(self, action):
        reward = float(np.sum(np.asarray(action) == self.target))
        self.t += 1
        return self._observe(), reward, False, self.t >= 10, {}


class MaskedTarget(gym.Env):
    n = 6

    def __init__(self):
        self.observation_space = gym.spaces.Dict({
            "target": gym.spaces.Discrete(self.n), "action_mask": gym.spaces.Box(0, 1, (self.n,), np.int8)})
        self.action_space = gym.spaces.Discrete(self.n)

    def _observe(self):
        valid = self.np_random.choice(self.n, 3, replace=False)
        self.mask = np.zeros(self.n, np.int8)
        self.mask[valid] = 1
        self.target = int(valid[0])
        return {"target": self.target, "action_mask": self.mask.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observe(), {}

    def step(self, action):
        if not self.mask[action]:
            return self._observe(), -1.0, True, False, {}
        reward = float(action == self.target)
        self.t += 1
        return self._observe(), reward, False, self.t >= 10, {}


ENVS = {"dict_cartpole": DictCartPole, "multidiscrete": MultiTarget, "masked": MaskedTarget}


def play(agent, env_fn, episodes: int = 20) -> tuple[list[float], list]:
    """Greedy returns of `episodes` episodes (env seeds EVAL_SEED + i) and every observation they saw."""
    returns, seen = [], []
    for i in range(episodes):
        env = env_fn()
        obs, _ = env.reset(seed=EVAL_SEED + i)
        total, done = 0.0, False
        while not done:
            seen.append(obs)
            obs, reward, terminated, truncated, _ = env.step(agent.predict(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns, seen


def batch(observations: list):
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.stack(observations)


def exported_actions(agent, observations, directory: str) -> dict[str, np.ndarray]:
    """The actions the SavedModel and ONNX exports give for a batch of observations (each input in the
    dtype its signature names)."""
    import onnxruntime
    import tensorflow as tf

    agent.export(os.path.join(directory, "policy"))
    policy = tf.saved_model.load(os.path.join(directory, "policy"))
    specs = policy.signatures["serve"].structured_input_signature[1]  # {input name: spec}
    named = observations if isinstance(observations, dict) else {"observations": observations}
    feed = {name: np.asarray(named[name], spec.dtype.as_numpy_dtype) for name, spec in specs.items()}
    saved = policy.signatures["serve"](**{name: tf.constant(value) for name, value in feed.items()})["actions"]
    agent.export(os.path.join(directory, "policy.onnx"), format="onnx")
    onnx = onnxruntime.InferenceSession(os.path.join(directory, "policy.onnx")).run(["actions"], feed)[0]
    return {"saved_model": saved.numpy(), "onnx": onnx}


def run_one(spec: dict) -> dict:
    import keras

    from keras_a3c import A3C, actor_critic_mlp

    keras.utils.set_random_seed(spec["seed"])
    env_fn = ENVS[spec["task"]]
    probe = env_fn()
    agent = A3C(actor_critic_mlp(probe.observation_space, probe.action_space))
    agent.compile()
    start = time.perf_counter()
    agent.fit(env_fn, spec["steps"], seed=spec["seed"], verbose=0)
    seconds = time.perf_counter() - start
    returns, seen = play(agent, env_fn)
    observations = batch(seen)
    expected = agent.predict(observations)
    with tempfile.TemporaryDirectory() as directory:
        exports = exported_actions(agent, observations, directory)
    return {**spec, "seconds": seconds, "env_steps": agent.env_steps, "eval_mean": float(np.mean(returns)),
            "eval_std": float(np.std(returns)), "observations_checked": len(seen),
            "exports_match_predict": {name: bool(np.array_equal(actions, expected))
                                      for name, actions in exports.items()}}


def main(argv):
    del argv
    if run_if_child(FLAGS.run, run_one):
        return
    specs = [{"task": task, "seed": seed, "steps": FLAGS.steps or TASKS[task]}
             for task in FLAGS.tasks for seed in range(FLAGS.seed_offset, FLAGS.seed_offset + FLAGS.seeds)]
    for result in run_specs(__file__, specs, FLAGS.json, FLAGS.parallel):
        print(f"{result['task']} seed {result['seed']}: eval {result['eval_mean']:.1f} +/- "
              f"{result['eval_std']:.1f} after {result['env_steps']:,} env steps, {result['seconds']:.0f} s; "
              f"exports give predict's actions on {result['observations_checked']} observations: "
              f"{result['exports_match_predict']}", flush=True)


if __name__ == "__main__":
    app.run(main)
