"""The fault suite: misbehaving envs, non-finite numbers, interrupts, bad configuration and load.

keras_a3c must fail loudly, lose nothing and never hang: every test here checks that the
error names the problem, that no worker thread survives, and that saved work stays loadable.
"""

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

import gymnasium as gym
import keras
import numpy as np
import pytest
from envs import FaultyEnv, IdentityEnv, ObservationSpaceEnv, SpaceEnv, one_faulty

import keras_a3c
from keras_a3c.normalization import observation_normalizers
from keras_a3c.observations import ObservationCodec
from keras_a3c.segment import SegmentLayout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "cartpole.py")


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("a3c-worker")]


def make_agent(env=IdentityEnv, **compile_args) -> keras_a3c.A3C:
    spec = env()
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space, (16,)))
    agent.compile(optimizer=keras.optimizers.Adam(1e-3), **compile_args)
    return agent


# ----------------------------------------------------------------------------- 1. envs that raise


@pytest.mark.parametrize(
    "mode, fail_after, where",
    [("raise", 400, "step"), ("reset", 1, "reset"), ("reset", 30, "reset")],  # 30: an autoreset mid-run
    ids=["step", "first-reset", "later-reset"],
)
def test_an_env_that_raises_in_one_worker_stops_fit_within_2_s(tmp_path, mode, fail_after, where):
    agent = make_agent()
    checkpoints = tmp_path / "checkpoints"
    FaultyEnv.raised_at = None
    # Env 6 is the 5th env made for the workers (env 0 is the probe that reads the spaces): worker 1's.
    with pytest.raises(RuntimeError, match=f"FaultyEnv exploded in {where}") as info:
        agent.fit(one_faulty(6, fail_after=fail_after, mode=mode), total_steps=10**9, workers=3, envs_per_worker=4,
                  verbose=0, callbacks=[keras_a3c.Checkpoint(checkpoints, every_steps=500)])
    seconds = time.perf_counter() - FaultyEnv.raised_at
    assert seconds < 2.0, f"fit raised {seconds:.2f} s after the env did"
    assert not worker_threads()
    assert "raised in keras_a3c worker 1" in info.value.__notes__
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any(frame.name == "_explode" for frame in frames)  # the original traceback, down to the env
    latest = keras_a3c.latest_checkpoint(checkpoints)
    if mode == "raise":  # 400 steps of that env: thousands of env steps, checkpoints every 500
        assert latest is not None
    if latest is not None:
        loaded = keras_a3c.load(latest)
        assert 0 < loaded.env_steps <= agent.env_steps


def test_an_env_that_cannot_be_made_fails_fit_before_any_worker_starts():
    made = []

    def factory():
        if len(made) == 5:
            raise OSError("no display for env 5")
        made.append(IdentityEnv())
        return made[-1]

    agent = make_agent()
    threads_before = threading.active_count()
    with pytest.raises(OSError, match="no display for env 5"):
        agent.fit(factory, total_steps=10_000, workers=3, envs_per_worker=2, verbose=0)
    assert threading.active_count() == threads_before
    assert agent.training_state.start_time is None  # the fit's clock stopped; the agent can fit again
    agent.fit(IdentityEnv, total_steps=200, workers=2, envs_per_worker=2, verbose=0)
    assert agent.env_steps >= 200


# ----------------------------------------------------------------------------- 2. non-finite numbers


@pytest.mark.parametrize("mode, name, value", [("nan", "observation", "nan"), ("inf_reward", "reward", "inf")])
def test_a_non_finite_observation_or_reward_names_worker_step_and_value(mode, name, value):
    agent = make_agent()
    pattern = rf"worker 0, vector-env step \d+ \(envs 0..1\): {name} has a non-finite value {value}"
    with pytest.raises(FloatingPointError, match=pattern):
        agent.fit(one_faulty(1, fail_after=25, mode=mode), total_steps=10**9, workers=2, envs_per_worker=2, verbose=0)
    assert not worker_threads()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_non_finite_loss_keeps_the_weights_from_before_the_update(jit_compile):
    """Trainable weights, optimizer slots and the observation statistics all stay as they were, whether or not
    XLA compiled the update."""
    agent = make_agent(jit_compile=jit_compile)
    assert observation_normalizers(agent.network)  # the default builder normalises observations
    agent.optimizer.build(agent.network.trainable_variables)
    agent.action_space = gym.spaces.Discrete(4)
    codec = ObservationCodec.for_space(gym.spaces.Box(-1, 1, (4,)))
    layout = SegmentLayout([(4, np.float32)], (), np.int64)
    train = agent.learner.compile(layout, 3, agent.action_space, codec)
    segment = layout.empty(agent.config.n_steps, 3)
    packed = segment[0]
    packed[:, :, layout.observation] = np.eye(4)[1]
    packed[:-1, :, layout.valid] = 1.0
    train(segment)  # one good update, so the optimizer has state to lose
    weights = [v.numpy().copy() for v in agent.network.weights]
    slots = [v.numpy().copy() for v in agent.optimizer.variables]
    packed[:, :, layout.observation] = np.eye(4)[2]  # observations the statistics have not seen
    packed[:-1, :, layout.reward] = 3e38  # finite, but the n-step return overflows float32
    with pytest.raises(FloatingPointError, match="loss is not finite.*not applied"):
        train(segment)
    for before, variable in zip(weights + slots, agent.network.weights + agent.optimizer.variables,
                                strict=True):
        np.testing.assert_array_equal(variable.numpy(), before)
    assert int(agent.optimizer.iterations) == 1
    assert np.isfinite(agent.update_logs.result()["loss"])  # the failed update left no NaN in the logs


def test_a_non_finite_loss_stops_fit_with_terminate_on_nan_in_the_callbacks():
    agent = make_agent(normalize_rewards=False)  # normalised, 3e38 rewards would be scaled down to finite ones
    with pytest.raises(FloatingPointError, match="loss is not finite") as info:
        agent.fit(one_faulty(1, fail_after=40, mode="huge_reward"), total_steps=10**9, workers=2, envs_per_worker=2,
                  verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    assert any("worker 0" in note for note in info.value.__notes__)
    assert all(np.isfinite(v.numpy()).all() for v in agent.network.weights)
    assert not worker_threads()


# ----------------------------------------------------------------------------- 3. interrupts


def test_keyboard_interrupt_stops_every_worker_within_2_s():
    agent = make_agent()
    interrupted_at = []

    def interrupt():
        interrupted_at.append(time.perf_counter())
        _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread

    timer = threading.Timer(3.0, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            agent.fit(IdentityEnv, total_steps=10**9, workers=4, envs_per_worker=4, verbose=0)
    finally:
        timer.cancel()
    assert time.perf_counter() - interrupted_at[0] < 2.0
    assert not worker_threads()
    assert agent.env_steps > 0
    assert agent.training_state.start_time is None  # the fit's clock stopped


def test_ctrl_c_lands_as_a_flag_so_the_code_it_interrupts_runs_to_its_end():
    """Ctrl-C during fit stops the workers but raises nowhere inside fit: an interrupt between a lock's
    acquire and its `with` body (or in a save) would leave the lock held and a worker blocked on it for
    ever. fit raises KeyboardInterrupt once every worker is joined, and restores Python's handler."""
    agent = make_agent()
    finished = []

    class InterruptWhileHoldingTheUpdateLock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                with self.model.paused_updates():  # the update lock, held as a save holds it
                    _thread.interrupt_main()  # what Ctrl-C does
                    time.sleep(0.3)
                    finished.append(batch)

    with pytest.raises(KeyboardInterrupt):
        agent.fit(IdentityEnv, total_steps=10**9, workers=3, envs_per_worker=2, verbose=0,
                  callbacks=[InterruptWhileHoldingTheUpdateLock()])
    assert finished == [3]
    assert not worker_threads()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    steps = agent.env_steps
    agent.fit(IdentityEnv, total_steps=500, workers=3, envs_per_worker=2, verbose=0)  # no lock was left held
    assert agent.env_steps >= steps + 500


def test_ctrl_c_while_fit_sets_up_stops_the_run_once_it_has_started():
    """Ctrl-C before the workers start (the env that tells fit the spaces is being made, the update is
    being traced) is a flag too: nothing raises inside the set-up, where TensorFlow could swallow
    it, and fit stops the workers at its first tick and raises KeyboardInterrupt."""
    agent = make_agent()
    made = []

    def env():
        if not made:  # the first env: the one fit makes to read the spaces
            _thread.interrupt_main()
            time.sleep(0.2)  # a KeyboardInterrupt would land here
        made.append(1)
        return IdentityEnv()

    with pytest.raises(KeyboardInterrupt):
        agent.fit(env, total_steps=10**9, workers=2, envs_per_worker=2, verbose=0)
    assert len(made) == 1 + 2 * 2  # the spaces' env ran to its end, then each worker's envs
    assert not worker_threads()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_on_the_example_saves_a_final_checkpoint_and_exits_non_zero(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    args = ["--workers=2", "--envs_per_worker=4", "--total_steps=100000000", "--target_return=1e9",
            "--steps_per_epoch=2000", "--verbose=2", "--eval_episodes=0", f"--checkpoint_dir={checkpoints}",
            "--checkpoint_every_steps=100000000", "--checkpoint_every_seconds=0"]
    child = subprocess.Popen([sys.executable, EXAMPLE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT)
    try:
        for line in child.stdout:
            if line.startswith("epoch 2 "):  # training is under way
                break
        sent = time.perf_counter()
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, stderr
    assert time.perf_counter() - sent < 30  # stop, join, save and exit (TF's own teardown included)
    assert "interrupted at env step" in stderr and "saved the training state to" in stderr
    latest = keras_a3c.latest_checkpoint(checkpoints)
    assert latest is not None, stderr
    assert keras_a3c.load(latest).env_steps >= 4000


# ----------------------------------------------------------------------------- 4. invalid configuration


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gamma": 1.5}, "gamma must be in"),
        ({"gamma": -0.1}, "gamma must be in"),
        ({"n_steps": 0}, "n_steps must be an integer >= 1, got 0"),
        ({"entropy_coef": -0.01}, "entropy_coef must be a finite number >= 0, got -0.01"),
        ({"value_coef": -1}, "value_coef"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"reward_scale": 0.0}, "reward_scale"),
    ],
)
def test_compile_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_agent(**kwargs)


@pytest.mark.parametrize(
    "env, kwargs, message",
    [
        ("CartPole-v1", {"workers": 0}, "workers must be an integer >= 1, got 0"),
        ("CartPole-v1", {"total_steps": 0}, "total_steps"),
        ("CartPole-v1", {"envs_per_worker": 0}, "envs_per_worker"),
        ("NoSuchEnv-v0", {}, "unknown environment id 'NoSuchEnv-v0'"),
        (lambda: SpaceEnv(gym.spaces.MultiBinary([2, 2])), {}, "MultiBinary action spaces must be 1-D"),
        (lambda: SpaceEnv(gym.spaces.Dict({"a": gym.spaces.Discrete(2)})), {}, "unsupported action space Dict"),
        (lambda: ObservationSpaceEnv(gym.spaces.Dict({"inner": gym.spaces.Dict({"x": gym.spaces.Discrete(2)})})), {},
         "unsupported observation space Dict.*its entry 'inner' is a Dict; keras_a3c supports one level"),
        (lambda: ObservationSpaceEnv(gym.spaces.Dict({})), {}, "an empty Dict has nothing to observe"),
        (lambda: ObservationSpaceEnv(gym.spaces.Dict({"x": gym.spaces.Box(0, 1, (2,)),
                                                      "action_mask": gym.spaces.Box(0, 1, (3,), np.int8)})), {},
         r"'action_mask' entry Box\(0, 1, \(3,\), int8\) must have shape \(4,\)"),
        (lambda: ObservationSpaceEnv(gym.spaces.Tuple((gym.spaces.MultiDiscrete([3, 2]),))), {},
         "its entry 0 is MultiDiscrete"),
        (lambda: gym.make("Blackjack-v1"), {}, r"could not be called on observations \(a batch of 2, as a dict"),
        (IdentityEnv, {}, "logits"),  # CartPole's 2-action model against a 4-action env
    ],
)
def test_fit_rejects_bad_configuration_before_any_thread_starts(env, kwargs, message):
    spec = gym.make("CartPole-v1")
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space, (8,)))
    agent.compile(optimizer="adam")
    threads_before = threading.active_count()
    with pytest.raises(ValueError, match=message):
        agent.fit(env, verbose=0, **{"total_steps": 1000, **kwargs})
    assert threading.active_count() == threads_before


def test_a_user_model_whose_outputs_do_not_fit_the_action_space_is_named():
    inputs = keras.Input((4,))
    agent = keras_a3c.A3C(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    agent.compile(optimizer="adam")
    with pytest.raises(ValueError, match="two outputs"):
        agent.fit("CartPole-v1", total_steps=100, verbose=0)


@pytest.mark.parametrize(
    "flag, message",
    # (--workers=0, --gamma=1.5 and an existing --export_dir: see test_examples.py)
    [("--n_steps=0", "n_steps"), ("--entropy_coef=-1", "entropy_coef"), ("--env=NoSuchEnv-v0", "NoSuchEnv-v0"),
     ("--resume", "checkpoint_dir")],
)
def test_the_example_rejects_invalid_flags_before_training(flag, message):
    out = subprocess.run([sys.executable, EXAMPLE, flag, "--total_steps=1000"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode != 0 and message in out.stderr
    assert "env_steps" not in out.stdout  # nothing trained


# ----------------------------------------------------------------------------- 5. load

def test_64_workers_on_cartpole_for_200k_steps_finish_without_deadlock():
    script = """
import faulthandler, sys, threading
faulthandler.dump_traceback_later(240, exit=True)  # a deadlock prints every thread's stack, then fails
import gymnasium as gym, keras, keras_a3c
env = gym.make("CartPole-v1")
agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (32,)))
agent.compile(optimizer=keras.optimizers.Adam(1e-3))
agent.fit("CartPole-v1", total_steps=200_000, workers=64, envs_per_worker=4, verbose=0)
state = agent.training_state
assert len(state.worker_steps) == 64 and all(s > 0 for s in state.worker_steps), state.worker_steps
assert sum(state.worker_steps) == state.env_steps >= 200_000
assert sum(state.worker_updates) == state.updates == int(agent.optimizer.iterations)
assert not [t for t in threading.enumerate() if t.name.startswith("a3c-worker")]
print("OK", state.env_steps, state.updates)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("OK")


# ----------------------------------------------------------------------------- 7. who owns what


class ThreadRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.threads = set()

    def _record(self, *args, **kwargs):
        self.threads.add(threading.get_ident())

    on_train_begin = on_epoch_begin = on_train_batch_end = on_epoch_end = on_train_end = _record


def test_callbacks_run_on_the_calling_thread_and_the_counters_are_exact():
    agent = make_agent()
    recorder = ThreadRecorder()
    agent.fit(IdentityEnv, total_steps=6000, workers=4, envs_per_worker=3, steps_per_epoch=1000, verbose=0,
              callbacks=[recorder])
    assert recorder.threads == {threading.get_ident()}
    state = agent.training_state
    assert sum(state.worker_steps) == state.env_steps >= 6000 and all(s > 0 for s in state.worker_steps)
    assert sum(state.worker_updates) == state.updates == int(agent.optimizer.iterations)
    # Every env step of a 10-step episode is counted once: episodes * 10 <= steps < (episodes + 12) * 10.
    assert state.episodes * 10 <= state.env_steps < (state.episodes + 12) * 10
