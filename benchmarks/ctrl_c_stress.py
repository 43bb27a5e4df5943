"""Ctrl-C stress: run an example many times, send SIGINT at a random moment of training, and count
the runs that do not exit with code 130 within `--timeout` seconds (a hang is dumped with py-spy,
when it is installed, before the child is killed).

    python benchmarks/ctrl_c_stress.py --runs 60 --saves_every_tick --load 1

With `--saves_every_tick` the example checkpoints on (almost) every 0.1 s tick of the fit loop, so
the SIGINT often lands in or next to a save, which holds the update lock; `--load N` keeps N busy
processes running to load the CPU. Children start with SIGINT's default disposition (a background
job of a non-interactive shell would ignore it, and Python would then install no handler).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_integer("runs", 30, "How many runs.", lower_bound=1)
flags.DEFINE_string("example", os.path.join(ROOT, "examples", "cartpole.py"), "The example to interrupt.")
flags.DEFINE_bool("saves_every_tick", True, "Checkpoint on every tick, so the SIGINT often lands in a save.")
flags.DEFINE_integer("load", 1, "Busy processes loading the CPU while the runs go.", lower_bound=0)
flags.DEFINE_float("timeout", 20.0, "Seconds after the SIGINT after which a run counts as hung.", lower_bound=1.0)
flags.DEFINE_float("max_delay", 1.5, "The SIGINT comes 0 to this many seconds after the first epoch line.")
flags.DEFINE_string("json", None, "Write every run and the summary here.")


def one_run(i: int, directory: str) -> dict:
    args = ["--workers=2", "--envs_per_worker=4", "--total_steps=100000000", "--target_return=1e9",
            "--steps_per_epoch=2000", "--verbose=2", "--eval_episodes=0", f"--checkpoint_dir={directory}/c"]
    if FLAGS.saves_every_tick:
        args += ["--checkpoint_every_steps=500", "--checkpoint_every_seconds=0.05", "--keep_checkpoints=2"]
    else:
        args += ["--checkpoint_every_steps=100000000", "--checkpoint_every_seconds=0"]
    log_path = os.path.join(directory, "log.txt")
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, FLAGS.example, *args], stdout=log, stderr=subprocess.STDOUT,
                                 cwd=ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started = time.time()
    while time.time() - started < 120 and child.poll() is None:
        with open(log_path) as log:
            if "epoch 1 " in log.read():
                break
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, FLAGS.max_delay))
    sent = time.time()
    child.send_signal(signal.SIGINT)
    try:
        code, seconds, dump = child.wait(FLAGS.timeout), time.time() - sent, None
    except subprocess.TimeoutExpired:
        code, seconds = None, None
        dump = (subprocess.run(["py-spy", "dump", "--pid", str(child.pid)], capture_output=True, text=True).stdout
                if shutil.which("py-spy") else "py-spy is not installed")
        child.kill()
        child.wait()
    return {"run": i, "exit_code": code, "seconds_to_exit": seconds, "hung": code is None, "py_spy": dump}


def main(argv):
    del argv
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(FLAGS.load)]
    runs = []
    try:
        for i in range(FLAGS.runs):
            directory = tempfile.mkdtemp(prefix="ctrl-c-")
            try:
                runs.append(one_run(i, directory))
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            run = runs[-1]
            print(f"run {i}: exit code {run['exit_code']}, "
                  + ("HUNG" if run["hung"] else f"{run['seconds_to_exit']:.2f} s after the SIGINT"), flush=True)
            if run["hung"]:
                print(run["py_spy"], flush=True)
    finally:
        for process in busy:
            process.kill()
    bad = [r for r in runs if r["exit_code"] != 130]
    exits = [r["seconds_to_exit"] for r in runs if r["seconds_to_exit"] is not None]
    summary = {"runs": len(runs), "bad": len(bad), "hung": sum(r["hung"] for r in runs),
               "max_seconds_to_exit": max(exits) if exits else None, "saves_every_tick": FLAGS.saves_every_tick,
               "load": FLAGS.load}
    print(f"{summary['runs']} runs, {summary['bad']} not exiting with 130 ({summary['hung']} hung), slowest exit "
          f"{summary['max_seconds_to_exit']:.2f} s")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"summary": summary, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
