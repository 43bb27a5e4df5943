"""What acting costs for a convolutional network, per way of computing the policy (issue: fast acting for
networks that are not Dense chains).

    python benchmarks/acting.py --json benchmarks/results/acting.json

For the MinAtar network on [16, 10, 10, 4] bool batches (8 workers x 16 envs) and the Atari network on
[4, 84, 84, 4] uint8 batches (8 workers x 4 envs), times on this thread, per call:
  - numpy_twin: `keras_a3c.acting.numpy_forward` on one worker's batch, numpy's BLAS on one thread (as `fit`
    holds it) and on its default threads;
  - compiled: one `tf.function` call on one worker's batch (what any other network acts through);
  - batched: one `tf.function` call on all 8 workers' batches at once (GA3C's predictor), divided by 8:
    the lower bound of that design, before the queues and the waiting it needs.
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import keras_a3c  # noqa: E402
from keras_a3c.acting import numpy_forward, weights_of  # noqa: E402

flags.DEFINE_integer("calls", 300, "Calls timed per way (after a warm-up).", lower_bound=10)
flags.DEFINE_string("json", None, "Write the results here.")
FLAGS = flags.FLAGS

WORKERS = 8
CASES = {  # name -> (observation space, architecture, envs per worker)
    "minatar": (gym.spaces.Box(0, 1, (10, 10, 4), bool), "minatar", 16),
    "atari": (gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), "atari", 4),
}


def per_call(function, calls: int) -> float:
    """Median-of-3 seconds per call of `function`."""
    function()
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        rounds.append((time.perf_counter() - start) / calls)
    return sorted(rounds)[1]


def measure(space: gym.spaces.Box, architecture: str, batch: int, calls: int) -> dict[str, float]:
    network = keras_a3c.actor_critic_cnn(space, gym.spaces.Discrete(3), architecture)
    forward, weights = numpy_forward(network), weights_of(network)
    rng = np.random.default_rng(0)
    obs = rng.integers(0, int(space.high.flat[0]) + 1, (WORKERS * batch, *space.shape)).astype(space.dtype)
    one = obs[:batch]
    specs = {n: tf.TensorSpec([n, *space.shape], tf.as_dtype(space.dtype)) for n in (batch, WORKERS * batch)}
    compiled = {n: tf.function(lambda x: network(x)[0], input_signature=[spec], autograph=False)
                for n, spec in specs.items()}
    with threadpool_limits(limits=1, user_api="blas"):
        twin_one_thread = per_call(lambda: forward(weights, one), calls)
    return {
        "numpy_twin_ms": 1e3 * twin_one_thread,
        "numpy_twin_default_blas_threads_ms": 1e3 * per_call(lambda: forward(weights, one), calls),
        "compiled_ms": 1e3 * per_call(lambda: compiled[batch](one).numpy(), calls),
        "batched_per_worker_ms": 1e3 * per_call(lambda: compiled[WORKERS * batch](obs).numpy(), calls) / WORKERS,
    }


def main(argv):
    del argv
    results = {}
    for name, (space, architecture, batch) in CASES.items():
        results[name] = {"batch": batch, **measure(space, architecture, batch, FLAGS.calls)}
        print(name, json.dumps({k: round(v, 3) for k, v in results[name].items()}), flush=True)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"workers": WORKERS, "cpus": os.cpu_count(), "results": results}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
