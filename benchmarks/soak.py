"""Soak: train CartPole-v1 with the default configuration for a long time and watch memory.

    python benchmarks/soak.py --minutes 10

RSS (from /proc/self/status) and the train function's trace count are sampled every
`--sample_seconds` from the main thread during `fit`. Reported: RSS growth between the
first minute and the end (target: < 50 MB between minute 1 and minute 10) and whether
the trace count stayed 1. Training does not stop at a solved policy: the point is to
run long.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import app, flags  # noqa: E402
from common import ENV_ID, default_agent, preset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("minutes", 10.0, "How long to train.", lower_bound=0.0)
flags.DEFINE_float("sample_seconds", 10.0, "Seconds between RSS samples.", lower_bound=0.1)
flags.DEFINE_integer("workers", None, "Worker threads (default: keras_a3c.presets.CARTPOLE).", lower_bound=1)
flags.DEFINE_string("json", "soak.json", "Write the samples and the summary here.")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Sampler(keras.callbacks.Callback):
    """Samples RSS and the trace count; stops the run after `seconds`."""

    def __init__(self, seconds: float, every: float):
        super().__init__()
        self.seconds, self.every = seconds, every
        self.samples: list[dict] = []

    def on_train_batch_end(self, batch, logs=None):
        if logs["time"] >= len(self.samples) * self.every:
            sample = {"time": logs["time"], "env_steps": logs["env_steps"], "rss_mb": rss_mb(),
                      "train_traces": self.model.train_trace_count, "episode_return": logs["episode_return"]}
            self.samples.append(sample)
            print(f"{sample['time']:7.1f} s  {int(sample['env_steps']):>12,} env steps  RSS {sample['rss_mb']:7.1f} MB"
                  f"  traces {sample['train_traces']}  mean return {sample['episode_return']:.1f}", flush=True)
        if logs["time"] >= self.seconds:
            self.model.stop_training = True


def main(argv):
    del argv
    agent = default_agent()
    sampler = Sampler(FLAGS.minutes * 60, FLAGS.sample_seconds)
    agent.fit(ENV_ID, total_steps=10**12, workers=FLAGS.workers or preset("cartpole").workers,
              envs_per_worker=preset("cartpole").envs_per_worker, verbose=0, callbacks=[sampler])
    samples = sampler.samples
    after_first_minute = [s for s in samples if s["time"] >= 60] or samples
    summary = {
        "minutes": FLAGS.minutes,
        "env_steps": agent.env_steps,
        "rss_first_minute_mb": after_first_minute[0]["rss_mb"],
        "rss_end_mb": samples[-1]["rss_mb"],
        "rss_growth_after_first_minute_mb": samples[-1]["rss_mb"] - after_first_minute[0]["rss_mb"],
        "train_traces": sorted({s["train_traces"] for s in samples}),
        "episodes": agent.training_state.episodes,
    }
    print(json.dumps(summary, indent=1))
    with open(FLAGS.json, "w") as f:
        json.dump({"summary": summary, "samples": samples}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
