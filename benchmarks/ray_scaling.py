"""The Ray backend (keras_a3c.RayBackend) against the thread backend, on this machine.

    python benchmarks/ray_scaling.py --suite cartpole --seeds 3     # solve on a 2-node local cluster vs threads
    python benchmarks/ray_scaling.py --suite faults --seeds 3       # the worker node removed mid-run
    python benchmarks/ray_scaling.py --suite messages --seeds 3     # segments per message: policy lag vs learning
    python benchmarks/ray_scaling.py --suite scaling                # LunarLander-v3: threads vs 1 / 2 / 4 actors
    python benchmarks/ray_scaling.py --suite costs                  # the learner's cost per segment and message

cartpole: the CartPole example's settings (`keras_a3c.presets.CARTPOLE`, 8 workers) until the mean of the last
100 training returns reaches 495 (the example's stop), with threads and with 2 actors on a 2-node cluster started
as the README does (`ray start --head`, then `ray start --address=...` on the same machine; 2 CPUs each); solved
means the training mean reached 475 and the exported SavedModel's greedy policy scores >= 475 over 20 episodes.
faults: the same on a `ray.cluster_utils.Cluster` of two 2-CPU nodes, the worker node removed once 60k env steps
are taken. messages: 2 actors with 1, 4 and 16 segments per message (private Ray instance). scaling: the
defaults (`keras_a3c.presets.DEFAULTS`) on LunarLander-v3 for --scaling_steps env steps with threads and with
1, 2 and 4 actors (private Ray instance): env steps/s and the seconds until the training mean first reaches
--scaling_target. costs: on an idle private Ray instance, what the learner pays per segment it applies
(`Learner.compile_apply`) and per message (an `exchange` round trip to an actor that answers at once), for the
CartPole, LunarLander and Atari networks. Each run is a fresh process; wall-clock includes starting the actors
(not the cluster).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local clusters without token authentication

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from common import evaluate_episodes, fmt, run_if_child, run_result, run_specs, stats  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("suite", "cartpole", ["cartpole", "faults", "messages", "scaling", "costs"], "What to measure.")
flags.DEFINE_integer("seeds", 3, "Runs per configuration (cartpole, faults, messages): seeds 0 .. seeds - 1.",
                     lower_bound=1)
flags.DEFINE_integer("port", 6390, "cartpole: the head's port of the local cluster.")
flags.DEFINE_integer("scaling_steps", 1_000_000, "scaling: env steps of each LunarLander-v3 run.", lower_bound=1)
flags.DEFINE_float("scaling_target", 0.0, "scaling: the training mean whose first crossing is timed.")
flags.DEFINE_string("json", "benchmarks/results/ray_scaling.jsonl", "Append every run here.")
flags.DEFINE_string("run", None, "Internal: one run in this process (JSON spec).")

SOLVED_AT = 475.0


def remove_node(cluster, node, after: int):
    """A Keras callback removing `node` from `cluster` once `after` env steps are taken (keras is imported in
    the child only)."""
    import keras

    class RemoveNode(keras.callbacks.Callback):
        removed_at: int | None = None

        def on_train_batch_end(self, batch, logs=None):
            if self.removed_at is None and logs["env_steps"] >= after:
                cluster.remove_node(node)
                self.removed_at = int(logs["env_steps"])

    return RemoveNode()


def run(spec: dict) -> dict:
    import keras
    import ray
    import tensorflow as tf

    import keras_a3c

    preset = keras_a3c.presets.get(spec["preset"])
    if spec.get("env"):
        preset = dataclasses.replace(preset, env=spec["env"])
    callbacks: list = [keras_a3c.StopOnMeanReturn(preset.target_return)] if spec.get("stop", True) else []
    cluster = None
    if spec.get("fault_at"):
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
        node = cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
        cluster.wait_for_nodes()
        callbacks.append(remove_node(cluster, node, spec["fault_at"]))
    backend = None
    if spec["actors"]:
        backend = keras_a3c.RayBackend(address=spec.get("address"), actors=spec["actors"],
                                       segments_per_message=spec.get("segments_per_message", 4))
    keras.utils.set_random_seed(spec["seed"])
    start = time.perf_counter()
    agent = preset.make_agent()
    history = agent.fit(preset.env, total_steps=spec.get("budget") or preset.total_steps, seed=spec["seed"],
                        verbose=0, callbacks=callbacks, backend=backend, **preset.fit_kwargs())
    seconds = time.perf_counter() - start
    episodes = history.episodes
    result = run_result(episodes["time"], episodes["env_steps"], episodes["return"], agent.env_steps, seconds,
                        target=spec.get("target", SOLVED_AT), **{k: v for k, v in spec.items() if k != "target"})
    last = {key: values[-1] for key, values in history.history.items()}
    result.update(policy_lag=last["policy_lag"], actor_failures=last.get("actor_failures", 0),
                  learner_busy=last.get("learner_busy"),
                  final_train_mean=float(np.mean(episodes["return"][-100:])))
    if cluster is not None:
        result["removed_at"] = callbacks[-1].removed_at
        ray.shutdown()
        cluster.shutdown()
    if spec.get("eval_episodes"):
        with tempfile.TemporaryDirectory() as tmp:
            agent.export(os.path.join(tmp, "policy"))
            policy = tf.saved_model.load(os.path.join(tmp, "policy"))
            returns = evaluate_episodes(lambda obs: policy.serve(tf.constant(obs)).numpy(), preset.env,
                                        spec["eval_episodes"])
        result["greedy_exported"] = float(np.mean(returns))
        result["solved"] = bool(result["solved"] and result["greedy_exported"] >= SOLVED_AT)
    return result


def costs(spec: dict) -> dict:
    """The learner's costs for one network (see the module docstring), medians over `repeats`."""
    import ray

    import keras_a3c
    from keras_a3c.learner import UPDATE_LOGS, Gradients
    from keras_a3c.ray_actor import Message

    preset = keras_a3c.presets.get(spec["preset"])
    if spec["preset"] == "atari":  # examples/atari_env.py registers AtariA3C/<Game>-v5
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
        import atari_env  # noqa: F401
    agent = preset.make_agent()
    observation_space, action_space = agent.check_env(preset.env)
    agent.optimizer.build(agent.network.trainable_variables)
    apply = agent.learner.compile_apply()
    size = sum(int(np.prod(v.shape)) for v in agent.network.trainable_variables)
    moments = [(np.zeros(layer.mean.shape, np.float32), np.ones(layer.mean.shape, np.float32), 1.0)
               for layer in agent.learner.normalizers]
    m = spec["segments_per_message"]
    gradients = Gradients(np.random.default_rng(0).normal(size=(m, size)).astype(np.float32) * 1e-3,
                          np.zeros((m, len(UPDATE_LOGS)), np.float32), moments)
    apply(gradients)  # warm up
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        weights = apply(gradients)
        times.append((time.perf_counter() - start) / m)
    per_segment = float(np.median(times))
    message = Message(gradients, 0, 0, np.zeros(0), np.zeros(0, np.int64), None)

    @ray.remote
    class Echo:
        def exchange(self, weights, version, reward_moments):
            return message

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    echo = Echo.remote()
    ray.get(echo.exchange.remote(weights, 0, None))
    trips = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        ray.get(echo.exchange.remote(weights, 0, None))
        trips.append(time.perf_counter() - start)
    ray.shutdown()
    return {**spec, "parameters": size, "apply_ms_per_segment": 1e3 * per_segment,
            "round_trip_ms": 1e3 * float(np.median(trips)), "message_mb": gradients.flat.nbytes / 2**20,
            "weights_mb": weights.nbytes / 2**20, "observation_space": str(observation_space),
            "segment_env_steps": preset.config.n_steps * preset.envs_per_worker}


def local_cluster(port: int) -> str:
    """Start the README's 2-node cluster on this machine (a head and a second node, 2 CPUs each)."""
    ray = [os.path.join(os.path.dirname(sys.executable), "ray")]
    subprocess.run(ray + ["start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"],
                   check=True, capture_output=True)
    subprocess.run(ray + ["start", f"--address=127.0.0.1:{port}", "--num-cpus=2"], check=True, capture_output=True)
    return f"127.0.0.1:{port}"


def stop_cluster() -> None:
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "stop"], capture_output=True)


def specs() -> list[dict]:
    seeds = range(FLAGS.seeds)
    measured = time.strftime("%Y-%m-%d")
    if FLAGS.suite == "cartpole":
        address = local_cluster(FLAGS.port)
        return [{"suite": "cartpole", "system": system, "preset": "cartpole", "seed": seed, "eval_episodes": 20,
                 "actors": actors, "address": address if actors else None, "measured": measured}
                for seed in seeds for system, actors in (("threads", 0), ("ray_2_actors_2_nodes", 2))]
    if FLAGS.suite == "faults":
        return [{"suite": "faults", "system": "ray_2_actors_node_removed", "preset": "cartpole", "seed": seed,
                 "eval_episodes": 20, "actors": 2, "fault_at": 60_000, "measured": measured} for seed in seeds]
    if FLAGS.suite == "messages":
        return [{"suite": "messages", "system": f"ray_2_actors_{m}_segments", "preset": "cartpole", "seed": seed,
                 "actors": 2, "segments_per_message": m, "measured": measured}
                for seed in seeds for m in (1, 4, 16)]
    if FLAGS.suite == "costs":
        return [{"suite": "costs", "system": f"costs_{name}", "preset": name, "segments_per_message": 4,
                 "repeats": 200, "measured": measured} for name in ("cartpole", "defaults", "atari")]
    return [{"suite": "scaling", "system": "threads" if not actors else f"ray_{actors}_actors", "preset": "defaults",
             "env": "LunarLander-v3", "seed": 0, "actors": actors, "budget": FLAGS.scaling_steps, "stop": False,
             "target": FLAGS.scaling_target, "measured": measured} for actors in (0, 1, 2, 4)]


def main(argv):
    del argv
    if run_if_child(FLAGS.run, lambda spec: costs(spec) if spec["suite"] == "costs" else run(spec)):
        return
    runs = specs()
    try:
        results = list(run_specs(__file__, runs, FLAGS.json))
    finally:
        if FLAGS.suite == "cartpole":
            stop_cluster()
    if FLAGS.suite == "costs":
        for r in results:
            print(f"{r['preset']:10} {r['parameters']:>9,} parameters  apply {r['apply_ms_per_segment']:.2f} ms a "
                  f"segment of {r['segment_env_steps']} env steps  round trip {r['round_trip_ms']:.2f} ms  "
                  f"message {r['message_mb']:.2f} MB + weights {r['weights_mb']:.2f} MB")
        return
    print(f"{'system':32} {'solved':>7} {'s to target':>14} {'steps to target':>16} {'steps/s':>14} {'lag':>6} "
          f"{'greedy':>7} {'failures':>8}")
    for system in dict.fromkeys(r["system"] for r in results):
        rows = [r for r in results if r["system"] == system]
        print(f"{system:32} {sum(r['solved'] for r in rows):>3}/{len(rows):<3} "
              f"{fmt(stats([r['seconds_to_solve'] for r in rows]), '.1f'):>14} "
              f"{fmt(stats([r['steps_to_solve'] for r in rows]), ',.0f'):>16} "
              f"{fmt(stats([r['sustained_steps_per_second'] for r in rows]), ',.0f'):>14} "
              f"{np.mean([r['policy_lag'] for r in rows]):>6.1f} "
              f"{fmt(stats([r.get('greedy_exported') for r in rows]), '.1f'):>7} "
              f"{sum(r['actor_failures'] for r in rows):>8}")


if __name__ == "__main__":
    app.run(main)
