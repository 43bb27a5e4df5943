"""The exported SavedModel: loadable without keras_a3c, same actions as the agent."""

import json
import os
import shutil
import subprocess
import sys

import gymnasium as gym
import keras
import numpy as np
import pytest

import keras_a3c

LOAD_WITHOUT_KERAS_A3C = """
import json, sys
import numpy as np
import tensorflow as tf
policy = tf.saved_model.load(sys.argv[1])
obs = tf.constant(json.loads(sys.argv[2]), tf.float32)
print(json.dumps({
    "serve": policy.serve(obs).numpy().tolist(),
    "serve_dtype": policy.serve(obs).dtype.name,
    "logits": policy.action_distribution(obs).numpy().tolist(),
    "value": policy.value(obs).numpy().tolist(),
    "keras_a3c_imported": any(m.startswith("keras_a3c") for m in sys.modules),
}))
"""


@pytest.fixture(scope="module")
def trained_agent():
    env = gym.make("CartPole-v1")
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (16,)))
    agent.compile(optimizer=keras.optimizers.Adam(3e-3))
    agent.fit("CartPole-v1", total_steps=2000, workers=2, envs_per_worker=4, verbose=0)
    return agent


def test_saved_model_serves_greedy_actions_without_keras_a3c(trained_agent, tmp_path):
    path = tmp_path / "policy"
    trained_agent.export(str(path))
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_KERAS_A3C, str(path), json.dumps(obs.tolist())],
        capture_output=True, text=True, check=True, env=env, cwd=str(tmp_path),
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["keras_a3c_imported"]
    assert result["serve_dtype"].startswith("int")
    logits, values = trained_agent.network(obs)
    np.testing.assert_array_equal(result["serve"], trained_agent.predict(obs, deterministic=True))
    np.testing.assert_allclose(result["logits"], logits, atol=1e-5)
    np.testing.assert_allclose(result["value"], np.ravel(values), atol=1e-5)


def test_saved_model_cli_lists_serve(trained_agent, tmp_path):
    path = tmp_path / "policy"
    trained_agent.export(str(path))
    cli = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable)) or shutil.which("saved_model_cli")
    assert cli, "saved_model_cli ships with tensorflow"
    out = subprocess.run([cli, "show", "--dir", str(path), "--all"], capture_output=True, text=True, check=True)
    assert "serve" in out.stdout
    assert "serving_default" in out.stdout


def test_export_never_overwrites(trained_agent, tmp_path):
    path = tmp_path / "policy"
    path.mkdir()
    (path / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="already exists"):
        trained_agent.export(str(path))
    assert (path / "keep.txt").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["policy"]  # no staging directory left behind


def test_export_to_unwritable_path_is_a_clear_error(trained_agent, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot write the export"):
        trained_agent.export(str(blocker / "policy"))
