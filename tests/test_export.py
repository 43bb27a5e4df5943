"""The exported policy: every SavedModel endpoint and signature, and the TFLite file, act as the live
agent does; they load without keras_a3c; a failed export leaves nothing behind."""

import json
import os
import re
import shutil
import subprocess
import sys

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf
from served import tflite_interpreter

import keras_a3c
from keras_a3c.distributions import LOG_STD_MAX, LOG_STD_MIN

OBS_SPACE = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
BOX3 = gym.spaces.Box(np.array([-1.0, -2.0, 0.0], np.float32), np.array([1.0, 2.0, 0.5], np.float32), (3,), np.float32)
ACTION_SPACES = {"discrete": gym.spaces.Discrete(3), "box": BOX3}
SEEDS = (7, 8)

LOAD_WITHOUT_KERAS_A3C = """
import json, sys
import tensorflow as tf
policy = tf.saved_model.load(sys.argv[1])
obs = tf.constant(json.loads(sys.argv[2]), tf.float32)
seed = tf.constant(7, tf.int64)
endpoints = {
    "serve": policy.serve(obs),
    "sample_7": policy.sample(obs, seed),
    "sample_7_again": policy.sample(obs, seed),
    "sample_8": policy.sample(obs, tf.constant(8, tf.int64)),
    "action_distribution": policy.action_distribution(obs),
    "value": policy.value(obs),
}
signatures = {name: fn(observations=obs, seed=seed) if name == "sample" else fn(observations=obs)
              for name, fn in policy.signatures.items()}
print(json.dumps({
    "endpoints": {name: t.numpy().tolist() for name, t in endpoints.items()},
    "dtypes": {name: t.dtype.name for name, t in endpoints.items()},
    "signatures": {name: {key: t.numpy().tolist() for key, t in out.items()} for name, out in signatures.items()},
    "keras_a3c_imported": any(m.startswith("keras_a3c") for m in sys.modules),
}))
"""


@pytest.fixture(scope="module", params=list(ACTION_SPACES))
def agent(request):
    """An untrained agent whose weights are moved off their initial values, so actions vary with the
    observation and Box means and samples reach past the bounds (exercising the clipping)."""
    space = ACTION_SPACES[request.param]
    # softplus: a state-dependent log std, the harder Gaussian head to export (ignored for Discrete).
    keras.utils.set_random_seed(0)  # the same network every run
    network = keras_a3c.actor_critic_mlp(OBS_SPACE, space, (8,), std="softplus", log_std_init=0.5)
    rng = np.random.default_rng(0)
    for v in network.trainable_variables:
        v.assign(v + rng.normal(0.0, 0.5, v.shape).astype(np.float32))
    return keras_a3c.A3C(network, action_space=space)


@pytest.fixture(scope="module")
def saved_model(agent, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "policy"
    agent.export(str(path))
    return path


def observations(n: int = 16) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 4)).astype(np.float32)


def expected_samples(agent, obs: np.ndarray, seed: int) -> np.ndarray:
    """What `sample` must return, from the live network and TF's stateless ops directly."""
    params = agent.network(obs)[0]
    if isinstance(agent.action_space, gym.spaces.Discrete):
        return tf.random.stateless_categorical(params, 1, [seed, 0], dtype=tf.int64)[:, 0].numpy()
    mean, log_std = np.split(params.numpy(), 2, axis=1)
    eps = tf.random.stateless_normal(mean.shape, [seed, 0]).numpy()
    return np.clip(mean + np.exp(np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)) * eps, BOX3.low, BOX3.high)


def assert_actions_match(actual, expected) -> None:
    """Discrete actions exactly; Box actions up to float32 rounding."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_every_endpoint_and_signature_matches_the_live_agent_without_keras_a3c(agent, saved_model, tmp_path):
    obs = observations()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_KERAS_A3C, str(saved_model), json.dumps(obs.tolist())],
        capture_output=True, text=True, check=True, env=env, cwd=str(tmp_path), timeout=120,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["keras_a3c_imported"]
    got, dtypes, signatures = result["endpoints"], result["dtypes"], result["signatures"]

    params, values = (np.asarray(y) for y in agent.network(obs))
    discrete = isinstance(agent.action_space, gym.spaces.Discrete)
    if discrete:
        assert dtypes["serve"] == dtypes["sample_7"] == "int64"
        distribution_key, distribution = "logits", params
    else:
        assert dtypes["serve"] == dtypes["sample_7"] == "float32"
        distribution_key = "mean_and_log_std"
        distribution = np.concatenate([params[:, :3], np.clip(params[:, 3:], LOG_STD_MIN, LOG_STD_MAX)], axis=1)
        assert np.ptp(params[:, 3:]) > 1e-2  # the log std depends on the state
        assert (np.abs(params[:, :3]) > 1.0).any()  # some means are outside the bounds: serve clips them
    assert_actions_match(got["serve"], agent.predict(obs, deterministic=True))
    for seed in SEEDS:
        assert_actions_match(got[f"sample_{seed}"], expected_samples(agent, obs, seed))
    assert got["sample_7_again"] == got["sample_7"]
    assert got["sample_8"] != got["sample_7"]
    assert all(agent.action_space.contains(np.asarray(a, agent.action_space.dtype)) for a in got["sample_7"])
    np.testing.assert_allclose(got["action_distribution"], distribution, atol=1e-5)
    np.testing.assert_allclose(got["value"], np.ravel(values), atol=1e-5)

    assert signatures == {
        "serve": {"actions": got["serve"]},
        "serving_default": {"actions": got["serve"]},
        "sample": {"actions": got["sample_7"]},
        "action_distribution": {distribution_key: got["action_distribution"]},
        "value": {"value": got["value"]},
    }


def saved_model_cli(*args: str) -> str:
    cli = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable)) or shutil.which("saved_model_cli")
    assert cli, "saved_model_cli ships with tensorflow"
    return subprocess.run([cli, *args], capture_output=True, text=True, check=True, timeout=120).stdout


def test_saved_model_cli_shows_named_inputs_and_outputs(agent, saved_model):
    shown = saved_model_cli("show", "--dir", str(saved_model), "--all")
    for signature in ("serve", "serving_default", "sample", "action_distribution", "value"):
        assert f"signature_def['{signature}']" in shown
    assert "inputs['observations']" in shown and "shape: (-1, 4)" in shown
    assert "inputs['seed']" in shown and "DT_INT64" in shown
    assert "outputs['actions']" in shown and "outputs['value']" in shown
    key = "logits" if isinstance(agent.action_space, gym.spaces.Discrete) else "mean_and_log_std"
    assert f"outputs['{key}']" in shown


@pytest.mark.parametrize("signature", ["serve", "sample"])
def test_saved_model_cli_runs_the_policy(agent, saved_model, signature, tmp_path):
    obs = observations(5)
    # saved_model_cli evaluates --input_exprs as Python literals: nested lists, not numpy calls.
    inputs = f"observations={obs.tolist()}" + (";seed=7" if signature == "sample" else "")
    out = saved_model_cli("run", "--dir", str(saved_model), "--tag_set", "serve", "--signature_def", signature,
                          "--input_exprs", inputs, "--outdir", str(tmp_path / "out"))
    assert "actions" in out, out
    actions = np.load(tmp_path / "out" / "actions.npy")  # --outdir writes each output key as .npy
    expected = agent.predict(obs) if signature == "serve" else expected_samples(agent, obs, 7)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)


def test_tflite_serves_the_same_actions_as_the_saved_model(agent, saved_model, tmp_path):
    path = tmp_path / "policy.tflite"
    agent.export(str(path), format="tflite")
    assert sorted(os.listdir(tmp_path)) == ["policy.tflite"]  # no staging directory left behind
    interpreter = tflite_interpreter(str(path))
    assert interpreter.get_signature_list() == {"serve": {"inputs": ["observations"], "outputs": ["actions"]}}
    obs = observations(6)
    # The converter fixes the batch at 1; resize the input to run a batch.
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], obs.shape)
    interpreter.allocate_tensors()
    actions = interpreter.get_signature_runner("serve")(observations=obs)["actions"]
    policy = tf.saved_model.load(str(saved_model))  # kept referenced: its functions need its variables
    served = policy.serve(tf.constant(obs)).numpy()
    assert actions.dtype == served.dtype and actions.shape == served.shape
    assert_actions_match(actions, served)


def test_export_rejects_an_unknown_format(agent, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'h5'"):
        agent.export(str(tmp_path / "policy"), format="h5")
    assert os.listdir(tmp_path) == []


RUN_ONNX_WITHOUT_TENSORFLOW = """
import json, sys
import numpy as np
import onnxruntime
onnx_policy = onnxruntime.InferenceSession(sys.argv[1])
obs = np.array(json.loads(sys.argv[2]), np.float32)
outputs = onnx_policy.run(None, {"observations": obs})
print(json.dumps({
    "inputs": [i.name for i in onnx_policy.get_inputs()],
    "outputs": {o.name: {"value": v.tolist(), "dtype": v.dtype.name}
                for o, v in zip(onnx_policy.get_outputs(), outputs)},
    "imported": sorted(m for m in ("tensorflow", "keras", "keras_a3c") if m in sys.modules),
}))
"""


def test_the_onnx_model_gives_the_saved_model_s_outputs_without_tensorflow(agent, saved_model, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    path = tmp_path / "policy.onnx"
    agent.export(str(path), format="onnx")
    assert sorted(os.listdir(tmp_path)) == ["policy.onnx"]  # no staging directory left behind
    obs = observations()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", RUN_ONNX_WITHOUT_TENSORFLOW, str(path), json.dumps(obs.tolist())],
                         capture_output=True, text=True, check=True, env=env, cwd=str(tmp_path), timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["imported"] == [] and result["inputs"] == ["observations"]
    policy = tf.saved_model.load(str(saved_model))
    discrete = isinstance(agent.action_space, gym.spaces.Discrete)
    key = "logits" if discrete else "mean_and_log_std"
    assert sorted(result["outputs"]) == sorted(["actions", key, "value"])
    actions = result["outputs"]["actions"]
    assert actions["dtype"] == ("int64" if discrete else "float32")
    assert_actions_match(np.array(actions["value"], actions["dtype"]), policy.serve(tf.constant(obs)).numpy())
    assert_actions_match(np.array(actions["value"], actions["dtype"]), agent.predict(obs))
    np.testing.assert_allclose(result["outputs"][key]["value"], policy.action_distribution(tf.constant(obs)),
                               atol=1e-5)
    np.testing.assert_allclose(result["outputs"]["value"]["value"], policy.value(tf.constant(obs)), atol=1e-5)


def test_onnx_export_without_tf2onnx_says_what_to_install_and_writes_nothing(agent, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx now raises ImportError
    with pytest.raises(ImportError, match="ONNX export needs tf2onnx, an optional dependency: pip install tf2onnx"):
        agent.export(str(tmp_path / "policy.onnx"), format="onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("existing", ["directory", "file"])
@pytest.mark.parametrize("format", ["saved_model", "tflite"])
def test_export_never_overwrites(agent, tmp_path, format, existing):
    path = tmp_path / "policy"
    if existing == "directory":
        path.mkdir()
        (path / "keep.txt").write_text("precious")
    else:
        path.write_text("precious")
    with pytest.raises(FileExistsError, match=f"{re.escape(str(path))} already exists"):
        agent.export(str(path), format=format)
    assert (path / "keep.txt" if existing == "directory" else path).read_text() == "precious"
    assert os.listdir(tmp_path) == ["policy"]  # no staging directory left behind


@pytest.mark.parametrize("format", ["saved_model", "tflite"])
def test_export_under_a_file_is_a_clear_error(agent, tmp_path, format):
    # A parent that is a regular file: unwritable even as root, where chmod stops nothing.
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = blocker / "sub" / "policy"
    with pytest.raises(OSError, match=f"cannot write the export to {re.escape(str(path))}"):
        agent.export(str(path), format=format)
    assert os.listdir(tmp_path) == ["file"] and blocker.read_text() == "not a directory"


@pytest.mark.parametrize("format", ["saved_model", "tflite"])
def test_failed_export_leaves_nothing_behind(agent, tmp_path, monkeypatch, format):
    def fail(*args, **kwargs):
        raise OSError("no space left on device")

    if format == "tflite":
        monkeypatch.setattr("keras_a3c.export._tflite_flat_buffer", fail)
    else:
        save = tf.saved_model.save

        def write_half_then_fail(obj, path, **kwargs):
            save(obj, path, **kwargs)
            os.remove(os.path.join(path, "saved_model.pb"))
            fail()

        monkeypatch.setattr(tf.saved_model, "save", write_half_then_fail)
    with pytest.raises(OSError, match="no space left"):
        agent.export(str(tmp_path / "new" / "dir" / "policy"), format=format)
    assert os.listdir(tmp_path) == []  # neither the staging directory nor the parents it created
