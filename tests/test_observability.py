"""Observability: TensorBoard scalars, the progress display, learning-curve plots, play.py --gif."""

import math
import os
import subprocess
import sys

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf
from envs import IdentityEnv
from PIL import Image

import keras_a3c
from keras_a3c.plot import _rolling_mean

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# plot_history draws an 11 x 4.5 inch figure at 110 dpi.
PLOT_SIZE = (1210, 495)
TENSORBOARD_METRICS = ("episode_return", "episode_length", "policy_loss", "value_loss", "entropy",
                       "explained_variance", "grad_norm", "steps_per_second", "policy_lag")


def make_agent(env, hidden_units=(16,)):
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, hidden_units))
    agent.compile(optimizer=keras.optimizers.Adam(3e-3))
    return agent


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    """One short CartPole fit with the TensorBoard callback: 4 epochs of 1000 env steps."""
    log_dir = tmp_path_factory.mktemp("tensorboard")
    agent = make_agent(gym.make("CartPole-v1"))
    history = agent.fit("CartPole-v1", total_steps=4000, workers=2, envs_per_worker=4, steps_per_epoch=1000,
                        verbose=0, callbacks=[keras.callbacks.TensorBoard(log_dir=str(log_dir))])
    return agent, history, log_dir


def read_scalars(log_dir) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from every event file under `log_dir`."""
    scalars: dict[str, dict[int, float]] = {}
    for directory, _, files in os.walk(log_dir):
        for name in files:
            if not name.startswith("events.out.tfevents"):
                continue
            for record in tf.data.TFRecordDataset(os.path.join(directory, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name == "scalars":
                        scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


def assert_png(path, size=PLOT_SIZE):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.size == size
        pixels = np.asarray(image.convert("L"))
    assert (pixels < 250).mean() > 0.02, "the image is (nearly) blank"


def synthetic_history(episodes=300):
    rng = np.random.default_rng(0)
    steps = np.sort(rng.integers(0, 100_000, episodes)).astype(float)
    history = keras.callbacks.History()
    history.history = {"env_steps": [50_000.0, 100_000.0], "time": [1.0, 2.0], "episode_return": [40.0, 180.0]}
    returns = 20 + steps / 500 + rng.normal(0, 5, episodes)
    history.episodes = {"time": steps / 5e4, "env_steps": steps, "return": returns, "length": np.full(episodes, 50.0)}
    return history


# ---------------------------------------------------------------- TensorBoard


def test_tensorboard_callback_records_the_training_metrics(tensorboard_run):
    _, history, log_dir = tensorboard_run
    scalars = read_scalars(log_dir)
    # Keras 3 writes epoch-level logs as "epoch_<name>", one value per epoch.
    missing = [name for name in TENSORBOARD_METRICS if f"epoch_{name}" not in scalars]
    assert not missing, f"no TensorBoard scalars for {missing}; tags: {sorted(scalars)}"
    epochs = len(history.epoch)
    assert epochs >= 3
    for name in TENSORBOARD_METRICS:
        recorded = scalars[f"epoch_{name}"]
        assert sorted(recorded) == list(range(epochs)), name
        for epoch, value in recorded.items():
            expected = history.history[name][epoch]
            assert value == pytest.approx(expected, rel=1e-5, nan_ok=True), (name, epoch)
    assert math.isfinite(scalars["epoch_episode_return"][epochs - 1])


# ---------------------------------------------------------------- progress display


def fit_identity(verbose):
    agent = make_agent(IdentityEnv())
    return agent.fit(IdentityEnv, total_steps=3000, workers=2, envs_per_worker=4, steps_per_epoch=1000,
                     verbose=verbose)


def test_verbose_0_prints_nothing(capsys):
    fit_identity(verbose=0)
    assert capsys.readouterr().out == ""


def test_verbose_2_prints_one_line_per_epoch_with_env_steps(capsys):
    history = fit_identity(verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(history.epoch) >= 3
    for epoch, line in enumerate(lines):
        assert line.startswith(f"epoch {epoch + 1} ")
        assert f"env_steps {int(history.history['env_steps'][epoch]):,}" in line
        assert "episode_return" in line and "entropy" in line and "steps_per_second" in line
        assert "\r" not in line and "\b" not in line


def test_verbose_1_shows_a_progress_bar_over_env_steps(capsys):
    history = fit_identity(verbose=1)
    out = capsys.readouterr().out
    final = out.replace("\b", "").split("\r")[-1]  # what the terminal shows at the end
    assert f"{int(history.history['env_steps'][-1])}/3000" in final
    for shown in ("episode_return", "entropy", "steps_per_second"):
        assert shown in final
    assert out.count("/3000") >= 2  # refreshed during the run, not only at the end


# ---------------------------------------------------------------- plot_history


def test_plot_history_from_a_real_fit(tensorboard_run, tmp_path):
    _, history, _ = tensorboard_run
    assert len(history.episodes["return"]) > 0
    path = tmp_path / "curve.png"
    keras_a3c.plot_history(history, path, target=475)
    assert_png(path)
    assert os.listdir(tmp_path) == ["curve.png"]  # no temporary file left beside it
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert os.stat(path).st_mode == os.stat(plain).st_mode  # the umask's mode, not a temp file's 0600


def test_plot_history_draws_episodes_rolling_mean_and_target(tmp_path):
    path = tmp_path / "curve.svg"
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    keras_a3c.plot_history(synthetic_history(), path, target=195, window=20)
    text = path.read_text()  # matplotlib's SVG precedes each text's glyph paths with a comment holding the text
    for label in ("Return vs env steps", "Return vs wall-clock time", "env steps", "wall-clock seconds",
                  "episode return", "return of each training episode (300)", "mean of the last 20 episodes",
                  "solve threshold 195"):
        assert label in text, label
    assert "History rows" not in text
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_loaded  # pyplot state is left alone
    png = tmp_path / "curve.png"
    keras_a3c.plot_history(synthetic_history(), png)
    assert_png(png)


def test_plot_history_falls_back_to_history_rows(tmp_path):
    history = synthetic_history()
    del history.episodes
    history.history["episode_return"][0] = float("nan")  # before the first episode ended
    path = tmp_path / "rows.svg"
    keras_a3c.plot_history(history, path)
    text = path.read_text()
    assert "mean return of recent episodes (History rows)" in text
    assert "solve threshold" not in text
    history.episodes = {key: np.array([]) for key in ("time", "env_steps", "return", "length")}
    keras_a3c.plot_history(history, tmp_path / "rows.png")
    assert_png(tmp_path / "rows.png")


def test_rolling_mean_covers_fewer_values_at_the_start():
    np.testing.assert_allclose(_rolling_mean(np.array([1.0, 2, 3, 4, 5]), 2), [1, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(_rolling_mean(np.array([4.0, 2, 6]), 100), [4, 3, 4])


def test_plot_history_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        keras_a3c.plot_history(keras.callbacks.History(), tmp_path / "a.png")
    not_finished = keras.callbacks.History()
    not_finished.history = {"env_steps": [100.0], "time": [0.1], "episode_return": [float("nan")]}
    with pytest.raises(ValueError, match="no training episode finished"):
        keras_a3c.plot_history(not_finished, tmp_path / "a.png")
    no_time = keras.callbacks.History()
    no_time.history = {"env_steps": [100.0], "episode_return": [1.0]}
    with pytest.raises(ValueError, match="no time"):
        keras_a3c.plot_history(no_time, tmp_path / "a.png")
    with pytest.raises(ValueError, match="image format"):
        keras_a3c.plot_history(synthetic_history(), tmp_path / "curve.txt")
    with pytest.raises(ValueError, match="window"):
        keras_a3c.plot_history(synthetic_history(), tmp_path / "a.png", window=0)
    assert os.listdir(tmp_path) == []


def test_plot_history_unwritable_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot write the plot"):
        keras_a3c.plot_history(synthetic_history(), blocker / "curve.png")
    directory = tmp_path / "curve.png"
    directory.mkdir()
    with pytest.raises(OSError, match="cannot write the plot"):
        keras_a3c.plot_history(synthetic_history(), directory)
    assert sorted(os.listdir(tmp_path)) == ["curve.png", "file"]  # no temporary file left behind


def test_failed_write_leaves_the_old_image_untouched(tmp_path, monkeypatch):
    path = tmp_path / "curve.png"
    path.write_bytes(b"old image")

    def fail_halfway(self, file, **kwargs):
        file.write(PNG_SIGNATURE)
        raise OSError("disk full")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        keras_a3c.plot_history(synthetic_history(), path)
    assert path.read_bytes() == b"old image"
    assert os.listdir(tmp_path) == ["curve.png"]


# ---------------------------------------------------------------- play.py


def test_play_prints_returns_and_records_a_gif_without_keras_a3c(tensorboard_run, tmp_path):
    agent, _, _ = tensorboard_run
    policy = tmp_path / "policy"
    agent.export(str(policy))
    gif = tmp_path / "episode.gif"
    # Without PYTHONPATH and run from tmp_path, keras_a3c cannot be imported: play.py must not need it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "play.py"), f"--policy={policy}", "--episodes=2",
         f"--gif={gif}"],
        capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    returns = [float(line.rsplit(" ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("episode ")]
    assert len(returns) == 2 and all(r >= 1 for r in returns)
    assert "2 episodes: mean return" in out.stdout
    with Image.open(gif) as image:
        assert image.format == "GIF"
        assert image.size == (600, 400)  # CartPole's rgb_array frame
        # One frame per state of episode 1; Pillow merges identical consecutive frames.
        assert 2 <= image.n_frames <= returns[0] + 1
        assert image.info["duration"] >= 20
