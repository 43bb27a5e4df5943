"""examples/cartpole.py end to end with a tiny budget, and its flagfile."""

import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "cartpole.py")


def run_example(*args):
    return subprocess.run([sys.executable, EXAMPLE, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cartpole_example_trains_evaluates_and_exports(tmp_path):
    export_dir = tmp_path / "policy"
    out = run_example("--workers=2", "--envs_per_worker=4", "--total_steps=3000", "--eval_episodes=3",
                      "--steps_per_epoch=1000", "--verbose=2", f"--export_dir={export_dir}")
    assert out.returncode == 0, out.stderr
    assert "env_steps" in out.stdout and "steps_per_second" in out.stdout
    assert "greedy policy over 3 episodes" in out.stdout
    assert (export_dir / "saved_model.pb").exists()


def test_cartpole_example_rejects_invalid_flags(tmp_path):
    out = run_example("--workers=0")
    assert out.returncode != 0 and "workers" in out.stderr
    out = run_example("--gamma=1.5")
    assert out.returncode != 0 and "gamma" in out.stderr
    existing = tmp_path / "exists"
    existing.mkdir()
    out = run_example(f"--export_dir={existing}")
    assert out.returncode != 0 and "export_dir" in out.stderr


def test_flagfile_holds_the_flag_defaults():
    """flags/cartpole.flags and the flags' defaults must not drift apart."""
    spec = importlib.util.spec_from_file_location("cartpole_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flag_values = module.FLAGS
    with open(os.path.join(ROOT, "flags", "cartpole.flags")) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert lines
    for line in lines:
        name, _, value = line[2:].partition("=")
        if not value and name.startswith("no") and name[2:] in flag_values:
            name, value = name[2:], "false"
        flag = flag_values[name]
        assert flag.parser.parse(value) == flag.default, f"--{name}: flagfile {value!r} vs default {flag.default!r}"
