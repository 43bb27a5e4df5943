"""The benchmark scripts stay runnable: the solve protocol on known numbers, and a smoke run
of each script with tiny budgets (the real measurements are not timed tests)."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_a3c

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_solved_when_the_mean_of_the_last_100_returns_first_reaches_475():
    bench = load("common")
    returns = np.array([100.0] * 150 + [500.0] * 150)
    times, steps = np.arange(300) * 0.5, np.arange(300) * 1000
    # The mean of episodes i-99..i is >= 475 once at most 6 of them are 100s: i = 150 + 93.
    assert bench.solve_point(times, steps, returns) == (243 * 0.5, 243_000)
    assert bench.solve_point(times[:200], steps[:200], returns[:200]) is None
    assert bench.solve_point(times[:50], steps[:50], np.full(50, 500.0)) is None  # fewer than 100 episodes


def run_script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", f"{name}.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_cartpole_solve_smoke_run(tmp_path):
    out = tmp_path / "result.json"
    proc = run_script("cartpole_solve", "--seeds=1", "--max_steps=3000", "--max_seconds=30", "--env_rate_seconds=0.05",
                      "--workers=2", '--variant={"importance_clip": 1.0}', f"--json={out}")
    assert "| keras_a3c 2 workers | 0/1 |" in proc.stdout
    result = json.loads(out.read_text())
    for name in ("keras_a3c 2 workers", 'keras_a3c 2 workers {"importance_clip": 1.0}'):
        run = result["systems"][name]["runs"][0]
        assert run["env_steps"] >= 3000 and run["episodes"] > 0 and run["peak_rss_mb"] > 0
        assert run["train_traces"] == 1
    assert result["systems"]['keras_a3c 2 workers {"importance_clip": 1.0}']["config"]["overrides"] == {
        "importance_clip": 1.0}
    assert {"single_env"} < set(result["env_steps_per_second"])  # and the vector env of one worker


def test_soak_smoke_run(tmp_path):
    out = tmp_path / "soak.json"
    run_script("soak", "--minutes=0.05", "--sample_seconds=1", "--workers=2", f"--json={out}")
    result = json.loads(out.read_text())
    assert len(result["samples"]) >= 2
    assert {"time", "env_steps", "rss_mb", "train_traces"} <= set(result["samples"][0])


def test_pendulum_solve_smoke_run(tmp_path):
    out = tmp_path / "result.json"
    proc = run_script("pendulum_solve", "--seeds=1", "--max_steps=7000", "--workers=2", "--max_seconds=30",
                      "--eval_episodes=2", "--env_rate_seconds=0.05", f"--json={out}")
    assert "| **keras_a3c 2 workers** | all | 0/1 |" in proc.stdout
    result = json.loads(out.read_text())
    assert result["protocol"]["target_return"] == -175 and result["protocol"]["eval_episodes"] == 2
    run = result["systems"]["keras_a3c 2 workers"]["runs"][0]
    assert run["env_steps"] >= 7000 and run["episodes"] > 0 and run["peak_rss_mb"] > 0
    assert len(run["eval_returns"]) == 2 and run["eval_mean"] == np.mean(run["eval_returns"])
    assert {"solved", "seconds_to_solve", "steps_to_solve", "seconds", "steps_per_second"} <= set(run)
    assert {"single_env", "vector_env_16"} == set(result["env_steps_per_second"])


def test_sweep_smoke_run_and_report(tmp_path):
    out = tmp_path / "sweep.jsonl"
    run_script("sweep", "--env=CartPole-v1", "--candidates=defaults", "--seeds=1", "--steps=2000",
               "--eval_episodes=2", '--overrides={"entropy_coef": 0.02}', f"--json={out}")
    (run,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert run["env_steps"] >= 2000 and run["overrides"] == {"entropy_coef": 0.02}
    assert run["passed"] == (run["eval_mean"] >= 475.0)
    table = run_script("sweep", "--report", f"--json={out}").stdout
    assert '| CartPole-v1 (bar 475) | defaults {"entropy_coef": 0.02} | 2,000 |' in table


def test_breadth_smoke_run_and_report(tmp_path):
    """keras_a3c's defaults and, where Stable-Baselines3 is installed (CI installs it), its A2C peer, which
    leaves nothing in the temp directory (SB3's default logger makes an SB3-<date> directory there)."""
    out, scratch = tmp_path / "breadth.jsonl", tmp_path / "tmp"
    scratch.mkdir()
    systems = ["keras_a3c"] + (["sb3_a2c"] if importlib.util.find_spec("stable_baselines3") else [])
    proc = run_script("breadth", "--envs=CartPole-v1", f"--systems={','.join(systems)}", "--steps=2000",
                      "--eval_episodes=2", f"--json={out}", env={**os.environ, "TMPDIR": str(scratch)})
    assert not list(scratch.glob("SB3-*"))
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["env"], r["system"]) for r in runs] == [("CartPole-v1", s) for s in systems]
    for run in runs:
        assert run["env_steps"] >= 2000 and run["seconds"] > 0 and np.isfinite(run["eval_mean"])
    for run in runs:  # a greedy policy can balance after 2,000 steps now and then: the row says whether it did
        passed = int(run["eval_mean"] >= 475)
        assert f"| CartPole-v1 (475) | 2,000 | {run['system']} | {passed}/1 |" in proc.stdout


def test_pixels_smoke_run_and_report(tmp_path):
    """MinAtar Breakout for two seconds a system (CI installs MinAtar and Stable-Baselines3)."""
    pytest.importorskip("minatar")
    out = tmp_path / "pixels.jsonl"
    systems = ["keras_a3c"] + (["sb3_a2c"] if importlib.util.find_spec("stable_baselines3") else [])
    proc = run_script("pixels", "--tasks=minatar", f"--systems={','.join(systems)}", "--minatar_seconds=2",
                      f"--json={out}")
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["task"], r["system"]) for r in runs] == [("minatar", s) for s in systems]
    for run in runs:
        assert run["env_steps"] > 0 and run["learning_steps_per_second"] > 0 and not run["solved"]
    minatar = keras_a3c.presets.MINATAR
    setting = f"{minatar.workers} workers x {minatar.envs_per_worker} envs, minatar network"
    assert f"| MinAtar/Breakout-v1 | keras_a3c | {setting} |" in proc.stdout


def test_pendulum_drift_smoke_run(tmp_path):
    out = tmp_path / "drift.jsonl"
    proc = run_script("pendulum_drift", "--seeds=1", "--steps=20000", "--action_bound_coef=0", f"--json={out}")
    assert "seed 0 action_bound_coef 0.0: eval" in proc.stdout
    run = json.loads(out.read_text())
    assert run["action_bound_coef"] == 0.0 and len(run["epochs"]) >= 2
    assert {"env_steps", "episode_return", "outside_bounds", "mean_abs_mean", "log_std"} <= set(run["epochs"][0])


def test_spaces_smoke_run(tmp_path):
    out = tmp_path / "spaces.jsonl"
    proc = run_script("spaces", "--tasks=masked", "--steps=2000", f"--json={out}")
    assert "masked seed 0: eval" in proc.stdout
    run = json.loads(out.read_text())
    assert run["env_steps"] >= 2000 and run["observations_checked"] > 0
    assert run["exports_match_predict"] == {"saved_model": True, "onnx": True}


def test_acting_smoke_run(tmp_path):
    out = tmp_path / "acting.json"
    run_script("acting", "--calls=10", f"--json={out}")
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"minatar", "atari"}
    for ways in results.values():
        assert all(ways[key] > 0 for key in ("numpy_twin_ms", "numpy_twin_default_blas_threads_ms", "compiled_ms",
                                             "batched_per_worker_ms"))


def test_cartpole_memory_smoke_run_and_report(tmp_path):
    """keras_a3c recurrent and, where sb3-contrib is installed (CI installs it), RecurrentPPO."""
    out = tmp_path / "memory.jsonl"
    systems = ["keras_a3c_lstm"] + (
        ["sb3_recurrent_ppo"] if importlib.util.find_spec("sb3_contrib") else [])
    proc = run_script("cartpole_memory", f"--systems={','.join(systems)}", "--seeds=1", "--steps=3000",
                      "--sb3_steps=512", "--eval_episodes=2", f"--json={out}")
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["system"] for r in runs] == systems
    for run in runs:
        assert run["seconds"] > 0 and len(run["returns"]) == 2 and np.isfinite(run["eval_mean"])
    for system in systems:
        assert f"| {system} | " in proc.stdout


def test_learning_curve_of_a_checkpointed_run(tmp_path):
    env = keras_a3c.envs.env_spaces("CartPole-v1")
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(*env, hidden_units=(8,)))
    agent.compile("adam")
    agent.fit("CartPole-v1", total_steps=4000, workers=2, envs_per_worker=2, verbose=0,
              callbacks=[keras_a3c.Checkpoint(tmp_path / "run")])
    episodes = agent.history.episodes
    out, curve = tmp_path / "curve.json", tmp_path / "curve.png"
    proc = run_script("learning_curve", f"--checkpoint_dir={tmp_path / 'run'}", "--every=1000", "--window=10",
                      f"--json={out}", f"--plot={curve}")
    assert f"wrote the curve to {curve}" in proc.stdout
    assert curve.read_bytes().startswith(b"\x89PNG")
    result = json.loads(out.read_text())
    assert result["env_steps"] == agent.env_steps and result["episodes"] == len(episodes["return"])
    first = result["curve"][0]
    ended = episodes["env_steps"] <= 1000
    assert first["env_steps"] == 1000 and first["episodes"] == ended.sum()
    assert first["mean_return"] == pytest.approx(np.mean(episodes["return"][ended][-10:]))
