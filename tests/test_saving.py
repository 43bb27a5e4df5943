"""Save / load of the whole training state, checkpoints that survive SIGKILL, resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import gymnasium as gym
import keras
import numpy as np
import pytest
from envs import ContinuousIdentityEnv, IdentityEnv

import keras_a3c
from keras_a3c import saving

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBS = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)


def make_agent(env=IdentityEnv, hidden=(16,), **compile_args):
    spec = env()
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space, hidden))
    schedule = keras.optimizers.schedules.ExponentialDecay(3e-3, 50, 0.5)
    compile_args.setdefault("optimizer", keras.optimizers.Adam(schedule))
    agent.compile(**compile_args)
    return agent


def outputs(agent, obs=OBS):
    params, value = agent.network(obs)
    return np.asarray(params), np.asarray(value)


def test_save_load_carries_weights_optimizer_counters_and_rng(tmp_path):
    agent = make_agent(entropy_coef=0.02, gamma=0.95, n_steps=4)
    agent.fit(IdentityEnv, total_steps=2000, workers=2, envs_per_worker=4, verbose=0, seed=3)
    path = agent.save(tmp_path / "agent")
    loaded = keras_a3c.load(path)

    for a, b in zip(outputs(agent), outputs(loaded), strict=True):
        np.testing.assert_array_equal(a, b)  # the same outputs right after loading
    assert len(agent.optimizer.variables) == len(loaded.optimizer.variables) > 1
    for a, b in zip(agent.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # iterations and the Adam slots
    assert int(loaded.optimizer.iterations) == int(agent.optimizer.iterations) > 0
    assert (loaded.config.entropy_coef, loaded.config.gamma, loaded.config.n_steps) == (0.02, 0.95, 4)
    assert loaded.action_space == agent.action_space
    saved, restored = agent.training_state, loaded.training_state
    assert (restored.env_steps, restored.updates, restored.episodes) == (saved.env_steps, saved.updates, saved.episodes)
    assert list(restored.recent_returns) == list(saved.recent_returns) and restored.episodes > 0
    for key, values in saved.episode_log().items():
        np.testing.assert_array_equal(restored.episode_log()[key], values)
    assert restored.seconds == pytest.approx(saved.seconds)
    # The agent's generator goes on where it stopped: the next fit's seeds are those the original would draw.
    assert loaded.rng.integers(2**31) == agent.rng.integers(2**31)


def test_a_loaded_agent_trains_on_from_the_saved_global_step(tmp_path):
    agent = make_agent()
    agent.fit(IdentityEnv, total_steps=3000, workers=2, envs_per_worker=4, steps_per_epoch=1000, verbose=0)
    state = agent.training_state
    steps, updates, episodes = state.env_steps, int(agent.optimizer.iterations), state.episodes
    loaded = keras_a3c.load(agent.save(tmp_path / "agent"))

    history = loaded.fit(IdentityEnv, total_steps=2000, workers=2, envs_per_worker=4, steps_per_epoch=1000, verbose=0)
    assert history.epoch[0] == steps // 1000  # epochs continue, keyed on the global env step
    assert history.history["env_steps"][0] > steps and history.history["env_steps"][-1] >= steps + 2000
    assert history.history["episodes"][-1] > episodes
    assert history.history["updates"][-1] == int(loaded.optimizer.iterations) > updates
    # The learning-rate schedule is keyed on optimizer.iterations: it carries on, not back at 3e-3.
    expected = 3e-3 * 0.5 ** (int(loaded.optimizer.iterations) / 50)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(expected, rel=1e-5)
    log = history.episodes  # the whole run, before and after the save
    assert len(log["return"]) == loaded.training_state.episodes
    assert log["env_steps"][0] <= steps < log["env_steps"][-1] and np.all(np.diff(log["time"]) >= 0)


def test_a_box_policy_round_trips(tmp_path):
    env = lambda: ContinuousIdentityEnv(dim=3)  # noqa: E731
    agent = make_agent(env, optimizer=keras.optimizers.Adam(1e-3))
    agent.fit(env, total_steps=500, workers=2, envs_per_worker=2, verbose=0)
    loaded = keras_a3c.load(agent.save(tmp_path / "agent"))
    obs = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(outputs(agent, obs)[0], outputs(loaded, obs)[0])
    np.testing.assert_array_equal(agent.predict(obs), loaded.predict(obs))
    assert loaded.action_space == agent.action_space


def test_save_never_clobbers_unless_asked(tmp_path):
    agent = make_agent()
    path = agent.save(tmp_path / "agent")
    before = open(os.path.join(path, saving.CONFIG_FILE)).read()
    with pytest.raises(FileExistsError, match="already exists"):
        agent.save(path)
    assert open(os.path.join(path, saving.CONFIG_FILE)).read() == before
    agent.network.layers[-1].kernel.assign(agent.network.layers[-1].kernel + 1.0)
    agent.save(path, overwrite=True)
    np.testing.assert_array_equal(outputs(keras_a3c.load(path))[1], outputs(agent)[1])
    assert sorted(os.listdir(tmp_path)) == ["agent"]  # no staging or old copies left behind


def test_save_to_an_unwritable_path_says_so_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot write the save to .*a_file/agent"):
        make_agent().save(blocker / "agent")
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_loading_garbage_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no keras_a3c save"):
        keras_a3c.load(tmp_path / "missing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "saved_model.pb").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a keras_a3c save"):
        keras_a3c.load(tmp_path / "foreign")
    (tmp_path / "plain_file").write_text("hello")
    with pytest.raises(ValueError, match="not a keras_a3c save"):
        keras_a3c.load(tmp_path / "plain_file")

    path = make_agent().save(tmp_path / "agent")
    config = os.path.join(path, saving.CONFIG_FILE)
    arrays = os.path.join(path, saving.ARRAYS_FILE)
    good_arrays = open(arrays, "rb").read()
    with open(arrays, "wb") as f:
        f.write(good_arrays[: len(good_arrays) // 2])  # truncated, as a crash outside our atomic write would leave it
    with pytest.raises(ValueError, match="corrupt"):
        keras_a3c.load(path)
    with open(arrays, "wb") as f:
        f.write(good_arrays)
    text = open(config).read()
    with open(config, "w") as f:
        f.write(text[:100])
    with pytest.raises(ValueError, match="corrupt: .*not valid JSON"):
        keras_a3c.load(path)
    wrong = json.loads(text)
    wrong["network_weights"] += 1
    with open(config, "w") as f:
        json.dump(wrong, f)
    with pytest.raises(ValueError, match="incomplete or corrupt: missing"):
        keras_a3c.load(path)


def test_load_into_a_given_network_checks_the_shapes(tmp_path):
    agent = make_agent()
    path = agent.save(tmp_path / "agent")
    spec = IdentityEnv()
    same = keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space, (16,))
    np.testing.assert_array_equal(outputs(keras_a3c.load(path, network=same))[0], outputs(agent)[0])
    other = keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space, (8,))
    with pytest.raises(ValueError, match="does not fit the network"):
        keras_a3c.load(path, network=other)


def test_checkpoint_callback_saves_during_fit_and_keeps_the_newest(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    stale = directory / ".ckpt-000000000123.tmp-killed"  # left by a save that was killed
    stale.mkdir()
    agent = make_agent()
    checkpoint = keras_a3c.Checkpoint(directory, every_steps=1000, keep=2)
    agent.fit(IdentityEnv, total_steps=6000, workers=2, envs_per_worker=4, verbose=0, callbacks=[checkpoint])
    found = saving.checkpoints(directory)
    assert len(found) == 2 and sorted(os.listdir(directory)) == [os.path.basename(p) for p in found]
    latest = keras_a3c.latest_checkpoint(directory)
    assert latest == found[-1] and latest.endswith(f"ckpt-{agent.env_steps:012d}")  # the final save
    loaded = keras_a3c.load(latest)
    assert loaded.env_steps == agent.env_steps
    np.testing.assert_array_equal(outputs(loaded)[0], outputs(agent)[0])
    earlier = keras_a3c.load(found[0])  # saved mid-fit: its counters belong together
    assert 0 < earlier.env_steps < agent.env_steps
    assert earlier.training_state.updates == int(earlier.optimizer.iterations)


def test_an_unwritable_checkpoint_directory_fails_before_any_worker_starts(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    threads_before = threading.active_count()
    with pytest.raises(OSError, match="cannot write checkpoints to"):
        make_agent().fit(IdentityEnv, total_steps=10_000, workers=2, envs_per_worker=2, verbose=0,
                         callbacks=[keras_a3c.Checkpoint(blocker / "ckpts", every_steps=100)])
    assert threading.active_count() == threads_before


# The child trains with checkpoints every 500 steps; its 3rd save is held mid-write (after the
# weights file is written, before the rename) until the parent kills it with SIGKILL.
KILLED_MID_SAVE = """
import os, sys, time
sys.path.insert(0, {tests!r})
import numpy as np
import keras, keras_a3c
from keras_a3c import saving
from envs import IdentityEnv

real_savez, saves = np.savez, []
def slow_savez(file, **arrays):
    real_savez(file, **arrays)
    saves.append(file)
    if len(saves) == 3:
        print("MID-SAVE", file, flush=True)
        time.sleep(600)
saving.np.savez = slow_savez

spec = IdentityEnv()
agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space, (16,)))
agent.compile(optimizer=keras.optimizers.Adam(1e-3))
agent.fit(IdentityEnv, total_steps=10**9, workers=2, envs_per_worker=4, verbose=0,
          callbacks=[keras_a3c.Checkpoint({directory!r}, every_steps=500, keep=5)])
"""


def test_a_process_killed_while_saving_leaves_the_last_checkpoint_loadable(tmp_path):
    directory = tmp_path / "checkpoints"
    script = KILLED_MID_SAVE.format(tests=os.path.dirname(os.path.abspath(__file__)), directory=str(directory))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = child.stdout.readline()
        assert line.startswith("MID-SAVE"), line
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.kill()
    complete = saving.checkpoints(directory)
    assert len(complete) == 2  # the first two saves; the third was killed half-way
    staging = [name for name in os.listdir(directory) if name.startswith(".ckpt-")]
    assert len(staging) == 1 and ".tmp-" in staging[0]  # the half-written save, hidden
    agent = keras_a3c.load(keras_a3c.latest_checkpoint(directory))
    assert agent.env_steps >= 1000 and int(agent.optimizer.iterations) > 0


def test_partial_dot_directories_are_never_listed_as_checkpoints(tmp_path):
    (tmp_path / ".ckpt-000000000500.tmp-x").mkdir()
    (tmp_path / "ckpt-notanumber").mkdir()
    (tmp_path / "ckpt-000000000100").write_text("a file, not a checkpoint")
    assert saving.checkpoints(tmp_path) == [] and keras_a3c.latest_checkpoint(tmp_path) is None
    assert keras_a3c.latest_checkpoint(tmp_path / "missing") is None


def test_checkpoint_rejects_bad_arguments():
    with pytest.raises(ValueError, match="every_steps"):
        keras_a3c.Checkpoint("x", every_steps=0)
    with pytest.raises(ValueError, match="keep"):
        keras_a3c.Checkpoint("x", keep=0)


def test_fit_rejects_a_non_integer_seed():
    with pytest.raises(ValueError, match="seed"):
        make_agent().fit(IdentityEnv, total_steps=100, verbose=0, seed=1.5)


def test_an_unknown_action_space_is_not_saved_silently(tmp_path):
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), (8,)))
    loaded = keras_a3c.load(agent.save(tmp_path / "uncompiled"))  # neither compiled nor trained: still loads
    assert loaded.action_space is None and not getattr(loaded, "compiled", False)
    np.testing.assert_array_equal(outputs(loaded)[0], outputs(agent)[0])


def test_keras_model_checkpoint_writes_loadable_saves(tmp_path):
    """ModelCheckpoint calls `model.save(path, overwrite=True)`: it gets the whole training state."""
    agent = make_agent()
    callback = keras.callbacks.ModelCheckpoint(str(tmp_path / "agent-{epoch}.keras"))
    agent.fit(IdentityEnv, total_steps=2000, workers=2, envs_per_worker=4, steps_per_epoch=1000, verbose=0,
              callbacks=[callback])
    saves = sorted(os.listdir(tmp_path))
    assert saves[:2] == ["agent-1.keras", "agent-2.keras"]
    loaded = keras_a3c.load(tmp_path / saves[-1])
    assert 0 < loaded.env_steps <= agent.env_steps


class TimedCheckpoint(keras_a3c.Checkpoint):
    """Remembers when each save began; stops the fit after `saves` of them."""

    def __init__(self, *args, saves: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.saves, self.times = saves, []

    def save(self, agent=None):
        self.times.append(time.monotonic())
        path = super().save(agent)
        if len(self.times) >= self.saves:
            self.model.stop_training = True
        return path


def test_checkpoint_every_seconds(tmp_path):
    """Saves by the clock, however long a save takes (the first one traces the network): the fit stops
    after three saves, long before its env-step budget, and they began at least every_seconds apart."""
    agent = make_agent()
    checkpoint = TimedCheckpoint(tmp_path, every_seconds=0.3, keep=None, save_at_end=False, saves=3)
    agent.fit(IdentityEnv, total_steps=10**7, workers=2, envs_per_worker=4, verbose=0, callbacks=[checkpoint])
    assert len(saving.checkpoints(tmp_path)) == 3 and agent.env_steps < 10**7
    times = checkpoint.times
    assert all(later - earlier >= 0.3 for earlier, later in zip(times[:-1], times[1:], strict=True))


def test_checkpoint_refuses_a_directory_holding_another_runs_checkpoints(tmp_path):
    first = make_agent()
    first.fit(IdentityEnv, total_steps=3000, workers=2, envs_per_worker=4, verbose=0,
              callbacks=[keras_a3c.Checkpoint(tmp_path, every_steps=1000)])
    before = saving.checkpoints(tmp_path)
    with pytest.raises(FileExistsError, match="another run's"):
        make_agent().fit(IdentityEnv, total_steps=3000, workers=2, envs_per_worker=4, verbose=0,
                         callbacks=[keras_a3c.Checkpoint(tmp_path, every_steps=1000)])
    assert saving.checkpoints(tmp_path) == before  # nothing deleted or overwritten
    resumed = keras_a3c.load(keras_a3c.latest_checkpoint(tmp_path))  # resuming from them is fine
    resumed.fit(IdentityEnv, total_steps=1000, workers=2, envs_per_worker=4, verbose=0,
                callbacks=[keras_a3c.Checkpoint(tmp_path, every_steps=1000)])
    assert saving.checkpoint_step(keras_a3c.latest_checkpoint(tmp_path)) > saving.checkpoint_step(before[-1])


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def test_a_save_of_format_version_1_loads_and_trains_as_it_did(tmp_path):
    """tests/data/agent_format_1 was written by keras_a3c before format version 2 (which added GAE,
    advantage and reward normalisation) and 3 (the action bound loss): it loads, gives the outputs it
    gave, and keeps those off."""
    agent = keras_a3c.load(os.path.join(DATA, "agent_format_1"))
    outputs = np.load(os.path.join(DATA, "agent_format_1_outputs.npz"))
    params, values = agent.network(outputs["obs"])
    # float32 within a few ulps: the kernels TensorFlow picks for this CPU may sum in another order.
    np.testing.assert_allclose(params, outputs["params"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(values, outputs["values"], rtol=1e-5, atol=1e-7)
    assert agent.config == keras_a3c.A3CConfig(n_steps=4, gamma=0.95, entropy_coef=0.02, max_grad_norm=5.0,
                                               gae_lambda=1.0, normalize_rewards=False, normalize_advantages=False,
                                               action_bound_coef=0.0)
    assert agent.env_steps == 1002 and agent.reward_normalizer is None
    agent.fit("CartPole-v1", total_steps=200, workers=1, envs_per_worker=2, verbose=0)
    assert agent.env_steps >= 1202


def test_a_save_of_an_unknown_format_version_names_it(tmp_path):
    path = tmp_path / "future"
    shutil.copytree(os.path.join(DATA, "agent_format_1"), path)
    config = json.loads((path / "agent.json").read_text())
    (path / "agent.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ValueError, match=f"format version 99; this keras_a3c reads versions 1 to "
                                         f"{saving.FORMAT_VERSION}"):
        keras_a3c.load(path)


def test_a_save_of_format_version_2_loads_without_the_action_bound_loss(tmp_path):
    """Format 3 added `action_bound_coef`; a version 2 save (which has no such setting) trains as it did."""
    path = make_agent(lambda: ContinuousIdentityEnv(dim=2)).save(tmp_path / "agent")
    config = json.loads(open(os.path.join(path, "agent.json")).read())
    del config["compile"]["action_bound_coef"]
    with open(os.path.join(path, "agent.json"), "w") as f:
        json.dump({**config, "format_version": 2}, f)
    loaded = keras_a3c.load(path)
    assert loaded.config == keras_a3c.A3CConfig(action_bound_coef=0.0)
    assert keras_a3c.load(make_agent().save(tmp_path / "new")).config.action_bound_coef == 1.0


def test_a_save_of_format_version_3_loads_without_reward_clipping(tmp_path):
    """Format 4 added `clip_raw_rewards`; a version 3 save (which has no such setting) trains as it did."""
    path = make_agent(clip_raw_rewards=1.0).save(tmp_path / "agent")
    config = json.loads(open(os.path.join(path, "agent.json")).read())
    assert config["compile"]["clip_raw_rewards"] == 1.0 and config["format_version"] == saving.FORMAT_VERSION
    del config["compile"]["clip_raw_rewards"]
    with open(os.path.join(path, "agent.json"), "w") as f:
        json.dump({**config, "format_version": 3}, f)
    assert keras_a3c.load(path).config.clip_raw_rewards is None


def test_a_save_keeps_xla_for_the_update_and_one_of_format_version_4_loads_without_it(tmp_path):
    """Format 5 added `jit_compile`; a version 4 save (which has no such setting) trains as it did."""
    path = make_agent(jit_compile=True).save(tmp_path / "agent")
    assert keras_a3c.load(path).config.jit_compile is True
    config = json.loads(open(os.path.join(path, "agent.json")).read())
    del config["compile"]["jit_compile"]
    with open(os.path.join(path, "agent.json"), "w") as f:
        json.dump({**config, "format_version": 4}, f)
    assert keras_a3c.load(path).config.jit_compile is False


def test_a_save_keeps_the_importance_clip_and_one_of_format_version_5_loads_without_it(tmp_path):
    """Format 6 added `importance_clip`; a version 5 save (which has no such setting) trains as it did."""
    path = make_agent(importance_clip=1.0).save(tmp_path / "agent")
    assert keras_a3c.load(path).config.importance_clip == 1.0
    config = json.loads(open(os.path.join(path, "agent.json")).read())
    del config["compile"]["importance_clip"]
    with open(os.path.join(path, "agent.json"), "w") as f:
        json.dump({**config, "format_version": 5}, f)
    assert keras_a3c.load(path).config.importance_clip is None
