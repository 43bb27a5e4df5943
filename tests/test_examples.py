"""The examples end to end with tiny budgets (train, evaluate, export, checkpoint, resume), and their flagfiles."""

import functools
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

import keras_a3c
from keras_a3c import saving

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "cartpole.py")
HAS_ALE = importlib.util.find_spec("ale_py") is not None and importlib.util.find_spec("cv2") is not None
HAS_MINATAR = importlib.util.find_spec("minatar") is not None
NEEDS_ALE = pytest.mark.skipif(not HAS_ALE, reason="needs ale-py (GPL, optional) and OpenCV")
NEEDS_MINATAR = pytest.mark.skipif(not HAS_MINATAR, reason="needs minatar (GPL, optional)")


def run_example(*args, example=EXAMPLE):
    return subprocess.run([sys.executable, example, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cartpole_example_trains_evaluates_and_exports(tmp_path):
    export_dir = tmp_path / "policy"
    curve = tmp_path / "plots" / "curve.png"
    # A target the training mean of a random policy (~22) and the greedy one (>= 8) both reach: the run
    # stops after its greedy check, once 100 episodes have ended (~2,200 env steps).
    out = run_example("--workers=2", "--envs_per_worker=4", "--total_steps=10000", "--eval_episodes=3",
                      "--target_return=5", "--target_eval_episodes=3", "--steps_per_epoch=1000", "--verbose=2",
                      f"--export_dir={export_dir}", f"--plot={curve}")
    assert out.returncode == 0, out.stderr
    assert "env_steps" in out.stdout and "steps_per_second" in out.stdout
    assert "StopOnMeanReturn: mean return" in out.stdout and ", greedy policy" in out.stdout
    assert "deterministic policy over 3 episodes" in out.stdout
    assert (export_dir / "saved_model.pb").exists()
    assert f"wrote learning curves to {curve}" in out.stdout
    assert curve.read_bytes().startswith(b"\x89PNG")


@functools.cache
def examples_common():
    """examples/common.py, loaded once under a name of its own (benchmarks/ has a `common` module too)."""
    spec = importlib.util.spec_from_file_location("examples_common", os.path.join(ROOT, "examples", "common.py"))
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    return common


def example_flags() -> flags.FlagValues:
    """A fresh FlagValues with every flag of the CartPole example (examples/common.py's define_flags), so the
    examples' validators can be checked without a process each."""
    flag_values = flags.FlagValues()
    examples_common().define_flags(keras_a3c.presets.CARTPOLE, flag_values)
    return flag_values


def test_cartpole_example_rejects_invalid_flags(tmp_path):
    out = run_example("--workers=0")  # end to end: the example exits non-zero, naming the flag
    assert out.returncode != 0 and "workers" in out.stderr
    existing = tmp_path / "exists"
    existing.mkdir()
    for bad, named in [("--gamma=1.5", "gamma"), (f"--export_dir={existing}", "export_dir"),
                       ("--plot=curve.txt", "plot"), ("--resume", "checkpoint_dir"), ("--hidden_units=64,x", "hidden")]:
        with pytest.raises(flags.IllegalFlagValueError, match=named):
            example_flags()(["cartpole.py", bad])
    assert example_flags()(["cartpole.py", "--gamma=0.99", f"--export_dir={tmp_path / 'new'}"])


# One interpreter for every example: each defines the same flags in absl's global FLAGS, so those of the example
# before (and the `common` module that defines them) are removed before the next one is loaded.
CHECK_FLAGFILES = """
import importlib.util, json, os, sys
from absl import flags
import keras_a3c
FLAGS = flags.FLAGS
absl_own = set(FLAGS)
failures = []
cases = json.loads(sys.argv[1])
for directory in {os.path.dirname(example) for example, _, _ in cases}:
    sys.path.insert(0, directory)  # as `python examples/<name>.py` would
for example, flagfile, name in cases:
    for flag in set(FLAGS) - absl_own:
        delattr(FLAGS, flag)
    sys.modules.pop("common", None)
    spec = importlib.util.spec_from_file_location("example_" + name, example)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    preset = keras_a3c.presets.get(name).flags()
    lines = [line.strip() for line in open(flagfile) if line.strip() and not line.startswith("#")]
    names = set()
    for line in lines:
        flag_name, _, value = line[2:].partition("=")
        if not value and flag_name.startswith("no") and flag_name[2:] in FLAGS:
            flag_name, value = flag_name[2:], "false"
        elif not value:
            value = "true"
        names.add(flag_name)
        flag = FLAGS[flag_name]
        parsed = flag.parser.parse(value)
        want = [str(u) for u in preset[flag_name]] if isinstance(preset[flag_name], list) else preset[flag_name]
        if parsed != flag.default:
            failures.append(f"{name}: --{flag_name}: flagfile {value!r} vs the example's default {flag.default!r}")
        if parsed != want:
            failures.append(f"{name}: --{flag_name}: flagfile {value!r} vs the preset's {preset[flag_name]!r}")
    if names != set(preset):
        failures.append(f"{name}: the flagfile lacks {set(preset) - names}, has extra {names - set(preset)}")
    print(name, len(lines), "flags checked")
sys.exit("\\n".join(failures) or None)
"""


def test_every_flagfile_holds_its_preset_and_its_example_s_defaults():
    """flags/<name>.flags, keras_a3c.presets.<NAME> and the example's flag defaults must not drift apart
    (the Atari and MinAtar examples where their optional packages are installed)."""
    pairs = [("cartpole", "cartpole"), ("pendulum", "pendulum"), ("defaults", "train"),
             ("cartpole_memory", "cartpole_memory")]
    pairs += [("atari", "atari")] * HAS_ALE + [("minatar", "minatar_a3c")] * HAS_MINATAR
    cases = [(os.path.join(ROOT, "examples", f"{example}.py"), os.path.join(ROOT, "flags", f"{name}.flags"), name)
             for name, example in pairs]
    out = subprocess.run([sys.executable, "-c", CHECK_FLAGFILES, json.dumps(cases)], capture_output=True, text=True,
                         cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines() if line.endswith("flags checked")] == [
        name for name, _ in pairs]


PENDULUM = os.path.join(ROOT, "examples", "pendulum.py")

LOAD_PENDULUM_POLICY = """
import json, sys
import numpy as np
import tensorflow as tf
policy = tf.saved_model.load(sys.argv[1])
actions = policy.serve(tf.constant(np.random.default_rng(0).uniform(-8, 8, (5, 3)), tf.float32))
print(json.dumps({"dtype": actions.dtype.name, "shape": actions.shape.as_list(),
                  "min": float(tf.reduce_min(actions)), "max": float(tf.reduce_max(actions))}))
"""


def test_pendulum_example_trains_evaluates_and_exports(tmp_path):
    export_dir = tmp_path / "policy"
    out = subprocess.run(
        [sys.executable, PENDULUM, "--workers=2", "--envs_per_worker=4", "--total_steps=2000", "--eval_episodes=2",
         "--steps_per_epoch=1000", "--verbose=2", "--std=softplus", f"--export_dir={export_dir}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "env_steps" in out.stdout and "deterministic policy over 2 episodes" in out.stdout
    loaded = subprocess.run([sys.executable, "-c", LOAD_PENDULUM_POLICY, str(export_dir)], capture_output=True,
                            text=True, check=True, timeout=120)
    served = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert served["dtype"] == "float32" and served["shape"] == [5, 1]
    assert -2.0 <= served["min"] <= served["max"] <= 2.0


@pytest.mark.parametrize("example", [EXAMPLE], ids=["cartpole"])  # the resume logic is examples/common.py's
def test_the_example_resumes_from_its_newest_checkpoint(tmp_path, example):
    checkpoints = tmp_path / "checkpoints"
    common = ["--workers=2", "--envs_per_worker=4", "--eval_episodes=0", "--verbose=0",
              f"--checkpoint_dir={checkpoints}"]
    first = run_example(*common, "--total_steps=3000", "--checkpoint_every_steps=1000", example=example)
    assert first.returncode == 0, first.stderr
    saved = saving.checkpoints(checkpoints)
    assert 1 <= len(saved) <= 3  # --keep_checkpoints=3
    steps = int(os.path.basename(saved[-1]).removeprefix("ckpt-"))
    assert steps >= 3000
    fresh = run_example(*common, "--total_steps=6000", example=example)  # without --resume: refused, nothing touched
    assert fresh.returncode != 0 and "pass --resume" in fresh.stderr
    assert saving.checkpoints(checkpoints) == saved
    second = run_example(*common, "--total_steps=6000", "--resume", example=example)
    assert second.returncode == 0, second.stderr
    assert f"resumed from {saved[-1]} at env step {steps:,}" in second.stdout
    trained = int(second.stdout.split("trained ")[1].split(" env steps")[0].replace(",", ""))
    assert 6000 - steps <= trained < 6000 - steps + 200  # only the remaining steps (+ segments in flight)
    assert int(os.path.basename(saving.checkpoints(checkpoints)[-1]).removeprefix("ckpt-")) == steps + trained
    done = run_example(*common, "--total_steps=6000", "--resume", example=example)
    assert done.returncode == 0 and "nothing to train" in done.stdout



TRAIN = os.path.join(ROOT, "examples", "train.py")


@pytest.mark.parametrize("env", ["Acrobot-v1", "LunarLander-v3"])  # Box actions: the Pendulum example's test
def test_the_general_example_trains_any_task_with_the_defaults(tmp_path, env):
    export_dir = tmp_path / "policy"
    out = run_example(f"--env={env}", "--workers=2", "--envs_per_worker=4", "--total_steps=2000", "--eval_episodes=2",
                      "--verbose=0", f"--export_dir={export_dir}", example=TRAIN)
    assert out.returncode == 0, out.stderr
    assert "deterministic policy over 2 episodes" in out.stdout
    assert (export_dir / "saved_model.pb").exists()


def test_the_examples_export_onnx_on_request(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    path = tmp_path / "policy.onnx"
    out = run_example("--env=Acrobot-v1", "--workers=2", "--envs_per_worker=2", "--total_steps=500",
                      "--eval_episodes=1", "--verbose=0", f"--export_dir={path}", "--export_format=onnx", example=TRAIN)
    assert out.returncode == 0, out.stderr
    assert f"exported the policy to {path} (onnx)" in out.stdout
    onnx_policy = onnxruntime.InferenceSession(str(path))
    actions = onnx_policy.run(["actions"], {"observations": np.zeros((3, 6), np.float32)})[0]
    assert actions.shape == (3,) and actions.dtype == np.int64


def test_a_tuple_observation_task_trains_exports_and_plays(tmp_path):
    """Blackjack-v1 observes a Tuple of three Discrete spaces: train.py learns it with the defaults and
    play.py plays the exported policy (one int32 input per entry) without keras_a3c."""
    export_dir = tmp_path / "policy"
    out = run_example("--env=Blackjack-v1", "--workers=2", "--envs_per_worker=4", "--total_steps=3000",
                      "--eval_episodes=20", "--verbose=0", f"--export_dir={export_dir}", example=TRAIN)
    assert out.returncode == 0, out.stderr
    played = run_example(f"--policy={export_dir}", "--env=Blackjack-v1", "--episodes=20", "--quiet",
                         example=os.path.join(ROOT, "examples", "play.py"))
    assert played.returncode == 0, played.stderr
    assert "20 episodes: mean return" in played.stdout


def train_export_and_play(tmp_path, example: str, env_id: str) -> None:
    """Train `example` for a few thousand steps, export the policy, and play 2 episodes of it with play.py."""
    export_dir = tmp_path / "policy"
    out = run_example("--workers=2", "--envs_per_worker=4", "--total_steps=3000", "--eval_episodes=2", "--verbose=0",
                      f"--export_dir={export_dir}", example=os.path.join(ROOT, "examples", f"{example}.py"))
    assert out.returncode == 0, out.stderr
    assert "deterministic policy over 2 episodes" in out.stdout
    played = run_example(f"--policy={export_dir}", f"--env={env_id}", "--episodes=2", "--quiet",
                         example=os.path.join(ROOT, "examples", "play.py"))
    assert played.returncode == 0, played.stderr
    assert "2 episodes: mean return" in played.stdout


@NEEDS_MINATAR
def test_the_minatar_example_trains_from_bool_images_exports_and_plays(tmp_path):
    train_export_and_play(tmp_path, "minatar_a3c", "MinAtar/Breakout-v1")


def test_the_memory_example_trains_a_recurrent_policy_exports_it_and_play_carries_its_state(tmp_path):
    train_export_and_play(tmp_path, "cartpole_memory", "memory_env:CartPoleNoVelocity-v1")


@NEEDS_ALE
def test_the_atari_envs_batched_by_ale_py_give_the_frames_and_rewards_of_one_env(monkeypatch):
    """What the workers step (ale-py's vector env) is what play.py and evaluation step (gymnasium's wrappers)."""
    import gymnasium as gym

    import keras_a3c

    monkeypatch.syspath_prepend(os.path.join(ROOT, "examples"))
    atari_env = importlib.import_module("atari_env")
    batch = keras_a3c.envs.make_vector_env("AtariA3C/Pong-v5", 2)
    assert isinstance(batch, atari_env.VectorFramesLast) and batch.single_observation_space.shape == (84, 84, 4)
    batch.close()
    # Without the random no-op starts both play the same game.
    one = gym.make("AtariA3C/Pong-v5", noop_max=0)
    batch = gym.make_vec("AtariA3C/Pong-v5", num_envs=1, vectorization_mode="vector_entry_point", noop_max=0)
    frames, _ = one.reset(seed=0)
    frame_batch, _ = batch.reset(seed=0)
    rng = np.random.default_rng(0)
    rewards = []
    for step in range(400):
        assert np.array_equal(frames, frame_batch[0]), f"the frames differ after {step} steps"
        action = int(rng.integers(6))
        frames, reward, terminated, truncated, _ = one.step(action)
        frame_batch, reward_batch, terminated_batch, truncated_batch, _ = batch.step(np.array([action]))
        assert (reward, terminated, truncated) == (reward_batch[0], terminated_batch[0], truncated_batch[0])
        rewards.append(reward)
    assert any(rewards)  # the game was scored in those steps
    one.close()
    batch.close()


@NEEDS_ALE
def test_the_atari_example_trains_on_preprocessed_frames_exports_and_plays(tmp_path):
    export_dir = tmp_path / "policy"
    out = run_example("--workers=2", "--envs_per_worker=2", "--total_steps=400", "--eval_episodes=0", "--verbose=0",
                      f"--export_dir={export_dir}", example=os.path.join(ROOT, "examples", "atari.py"))
    assert out.returncode == 0, out.stderr
    assert "exported the policy" in out.stdout
    played = run_example(f"--policy={export_dir}", "--env=atari_env:AtariA3C/Pong-v5", "--episodes=1", "--quiet",
                         example=os.path.join(ROOT, "examples", "play.py"))
    assert played.returncode == 0, played.stderr
    assert "1 episodes: mean return" in played.stdout
