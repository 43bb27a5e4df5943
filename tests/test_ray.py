"""The Ray backend: fit on a 2-node local cluster (ray.cluster_utils.Cluster), a node removed mid-run,
failures in an actor and on the learner's side, and the errors raised before anything starts."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import keras
import numpy as np
import pytest
from envs import IdentityEnv, one_faulty
from recording import record_segments

import keras_a3c
from keras_a3c.acting import ActionSampler
from keras_a3c.learner import UPDATE_LOGS, Learner
from keras_a3c.metrics import RunningMeans
from keras_a3c.observations import ObservationCodec
from keras_a3c.ray_backend import RayBackend, RayTrainer

ray = pytest.importorskip("ray")
# Under pytest-xdist's --dist loadfile (the README's test command) this module's tests run in one process:
# one cluster at a time, and lingering_actors sees no other test's actors.

# Registered in this process only: the actors get the registration from the learner.
gym.register("RayTestIdentity-v0", entry_point=IdentityEnv)


class FailsWhereShipped:
    """An env factory that works here and raises in any process it is pickled to (an actor's)."""

    shipped = False

    def __getstate__(self):
        return {"shipped": True}

    def __call__(self) -> IdentityEnv:
        if self.shipped:
            raise OSError("no such device in this process")
        return IdentityEnv()


def make_agent() -> keras_a3c.A3C:
    spec = IdentityEnv()
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space, (32,)))
    agent.compile(keras.optimizers.Adam(3e-3), entropy_coef=0.05)
    return agent


def actor_processes() -> dict[int, list[str]]:
    """The live processes that run a keras_a3c Ray actor (Ray titles them ray::ActorLearner...), each with
    the fields of its /proc/<pid>/stat after the process name (state first, start time at index 19)."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline, open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
                if b"ActorLearner" in cmdline.read() and fields[0] != "Z":
                    found[int(entry)] = fields
        except (OSError, ValueError, IndexError):
            continue
    return found


def lingering_actors(timeout: float = 10.0) -> list[str]:
    """The actor processes still alive after up to `timeout` s, each described (pid, age, state, what it waits
    in), for the assertion's message."""
    deadline = time.perf_counter() + timeout
    while (actors := actor_processes()) and time.perf_counter() < deadline:
        time.sleep(0.2)
    with open("/proc/uptime") as uptime:
        now = float(uptime.read().split()[0])
    described = []
    for pid, fields in actors.items():
        try:
            with open(f"/proc/{pid}/wchan") as wchan:
                waits = wchan.read() or "-"
        except OSError:  # exited since
            continue
        age = now - int(fields[19]) / os.sysconf("SC_CLK_TCK")
        described.append(f"pid {pid}, {age:.1f} s old, state {fields[0]}, waiting in {waits}")
    return described


# ---------------------------------------------------------------- the update, split across processes


@pytest.mark.parametrize("importance_clip", [None, 1.0])
def test_gradients_applied_elsewhere_make_the_threads_update(importance_clip, monkeypatch):
    """compile_gradients on a replica, then compile_apply on the shared model == the compiled update (weights,
    observation statistics and optimizer step alike), with and without the behaviour params in the segment."""
    segments = record_segments(monkeypatch)
    spec = IdentityEnv()
    make = lambda: keras_a3c.actor_critic_mlp(spec.observation_space, spec.action_space, (16,))  # noqa: E731
    agent = keras_a3c.A3C(make())
    agent.compile(keras.optimizers.Adam(1e-2), max_grad_norm=0.5, importance_clip=importance_clip)
    agent.fit(IdentityEnv, total_steps=200, workers=1, envs_per_worker=4, verbose=0, seed=0)
    segment = segments[-1]

    def learner(weights):
        network = make()
        network.set_weights(weights)
        learner = Learner(network, keras.optimizers.Adam(1e-2), agent.config, RunningMeans(UPDATE_LOGS))
        learner.optimizer.build(network.trainable_variables)
        codec = ObservationCodec.for_space(spec.observation_space, network)
        sampler = ActionSampler(spec.action_space)
        return learner, learner.segment_layout(codec, sampler), codec

    weights = agent.network.get_weights()
    threads, layout, codec = learner(weights)
    assert layout.params_size == (0 if importance_clip is None else 4)
    expected = threads.compile(layout, 4, spec.action_space, codec)(segment)
    replica, _, _ = learner(weights)
    shared, _, _ = learner(weights)
    gradients = replica.compile_gradients(layout, 4, spec.action_space, codec)(segment)
    assert gradients.segments == 1 and gradients.moments[0][2] > 0  # the observation sample travels along
    flat = shared.compile_apply()(gradients)
    assert np.allclose(flat, np.concatenate([w.reshape(-1) for w in expected]), atol=1e-6)
    assert int(shared.optimizer.iterations) == 1
    assert np.allclose(threads.logs.result()["loss"], shared.logs.result()["loss"])


# ---------------------------------------------------------------- before anything starts


def test_ray_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ImportError, match="needs Ray.*pip install"):
        RayBackend(actors=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"actors": 0}, "actors must be an integer >= 1"),
    ({"segments_per_message": 0}, "segments_per_message"),
    ({"max_restarts": -2}, "max_restarts"),
    ({"address": ""}, "address must be"),
    ({"num_cpus_per_actor": 0}, "num_cpus_per_actor"),
])
def test_bad_settings_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RayBackend(**kwargs)


def test_unreachable_address_fails_before_any_work():
    assert not ray.is_initialized()
    agent = make_agent()
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="cannot reach the Ray cluster at '127.0.0.1:9'"):
        agent.fit(IdentityEnv, total_steps=1000, workers=2, verbose=0, backend=RayBackend("127.0.0.1:9", actors=2))
    assert time.perf_counter() - start < 10
    assert agent.env_steps == 0 and not ray.is_initialized()


def test_more_actors_than_workers_and_wrong_backend_are_errors():
    agent = make_agent()
    with pytest.raises(ValueError, match="3 Ray actors need at least as many workers"):
        agent.fit(IdentityEnv, total_steps=1000, workers=2, verbose=0, backend=RayBackend(actors=3))
    with pytest.raises(TypeError, match="backend must be"):
        agent.fit(IdentityEnv, total_steps=1000, workers=2, verbose=0, backend="ray")


# ---------------------------------------------------------------- on a 2-node cluster


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node of 2 CPUs each; this process connected to it."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, include_dashboard=False)
    cluster.wait_for_nodes()
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def where(actor) -> tuple[int, str]:
    """(process id, node id) of a Ray actor, asked of the actor itself."""

    def ask(_):
        import os

        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    return ray.get(actor.__ray_call__.remote(ask), timeout=60)


class RemoveNode(keras.callbacks.Callback):
    """Removes the cluster's worker node and kills the fit's actors that ran there (`trainers[0].actors`, the
    RayTrainer of the fit) once `after` env steps are taken, and frees the head node's CPU that `placeholder`
    held (so an actor that died can be restarted there); stops the fit once every actor has taken `then` more
    env steps since (so the ones that died have been restarted and worked on)."""

    def __init__(self, cluster, node, placeholder, trainers: list, after: int, then: int):
        super().__init__()
        self.cluster, self.node, self.placeholder, self.after, self.then = cluster, node, placeholder, after, then
        self.trainers = trainers
        self.steps_at_removal: list[int] | None = None
        self.killed: list[int] = []

    def on_train_batch_end(self, batch, logs=None):
        steps = list(self.model.training_state.worker_steps)
        if self.steps_at_removal is None and logs["env_steps"] >= self.after:
            (trainer,) = self.trainers
            located = [where(actor) for actor in trainer.actors]
            self.killed = [pid for pid, node in located if node == self.node.node_id]
            assert self.killed, f"no actor ran on the node to remove: {located}"
            self.cluster.remove_node(self.node, allow_graceful=False)
            # A machine that is lost takes its processes with it (a raylet's workers may outlive it a while).
            for pid in self.killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            ray.kill(self.placeholder)
            self.steps_at_removal = steps
        elif self.steps_at_removal is not None and all(
                now - then >= self.then for now, then in zip(steps, self.steps_at_removal, strict=True)):
            self.model.stop_training = True


def hold_a_cpu_of(node) -> "ray.actor.ActorHandle":
    """An idle actor that holds one CPU of `node` until it is killed."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    class Placeholder:
        def ready(self) -> bool:
            return True

    placeholder = Placeholder.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)).remote()
    ray.get(placeholder.ready.remote(), timeout=120)
    return placeholder


def wait_for_free_cpus(count: float, timeout: float = 60.0) -> None:
    """Until the cluster has `count` CPUs free (the actors of the test before may still be releasing theirs)."""
    deadline = time.perf_counter() + timeout
    while ray.available_resources().get("CPU", 0) < count:
        assert time.perf_counter() < deadline, f"the cluster has {ray.available_resources()} free"
        time.sleep(0.2)


class CountActorProcesses(keras.callbacks.Callback):
    seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen = max(self.seen, len(actor_processes()))


def test_learns_on_a_cluster_with_the_thread_backends_logs_and_counters(cluster):
    agent = make_agent()
    # An entropy bonus of 1 holds a 4-action policy near uniform (entropy ~1.34 of ln 4 = 1.39); it learns only
    # if the actors' replicas follow the learner's update count down to beta = 0.1 after the first update.
    agent.compile(keras.optimizers.Adam(3e-3), entropy_coef=1.0, entropy_decay_updates=1)
    processes = CountActorProcesses()
    history = agent.fit("RayTestIdentity-v0", total_steps=40_000, workers=2, envs_per_worker=8,
                        steps_per_epoch=10_000, verbose=0, seed=1, callbacks=[processes],
                        backend=RayBackend(actors=2, segments_per_message=1))
    assert processes.seen == 2  # what lingering_actors looks for, found while the actors ran
    logs = history.history
    assert {"loss", "entropy", "episode_return", "env_steps", "updates", "policy_lag", "actor_failures",
            "learner_busy"} <= set(logs)
    assert 0 < logs["learner_busy"][-1] < 1
    assert logs["env_steps"][-1] == agent.env_steps >= 40_000
    assert history.epoch == [0, 1, 2, 3]  # the steps past the budget belong to the last epoch
    assert logs["actor_failures"][-1] == 0
    assert logs["entropy"][-1] < 1.2 and logs["entropy_coef"][-1] == pytest.approx(0.1)
    state = agent.training_state
    assert all(steps > 0 for steps in state.worker_steps) and sum(state.worker_steps) == state.env_steps
    # One optimizer step per segment, each counted once.
    assert int(agent.optimizer.iterations) == state.updates == sum(state.worker_updates)
    assert len(history.episodes["return"]) == state.episodes > 0
    mean, _ = agent.evaluate(IdentityEnv, episodes=20)
    assert mean >= 9.5  # a uniform policy scores 2.5
    assert not lingering_actors()


def test_a_node_removed_mid_run_is_survived(cluster, caplog, monkeypatch):
    head, worker = cluster
    agent = make_agent()
    trainers = []
    init = RayTrainer.__init__

    def recording_init(self, *args, **kwargs):
        trainers.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(RayTrainer, "__init__", recording_init)
    # With one of the head node's two CPUs held, at least one of the two 1-CPU actors runs on the worker node
    # (SPREAD scheduling is only a preference).
    wait_for_free_cpus(4)
    remove = RemoveNode(head, worker, hold_a_cpu_of(head.head_node), trainers, after=8_000, then=4_000)
    history = agent.fit(IdentityEnv, total_steps=10**7, workers=2, envs_per_worker=8, verbose=0, seed=2,
                        callbacks=[remove], backend=RayBackend(actors=2, segments_per_message=1))
    # The actor on the removed node died, was restarted on the head node, and both went on.
    assert remove.steps_at_removal is not None and agent.env_steps < 10**7
    assert history.history["actor_failures"][-1] >= len(remove.killed) >= 1
    assert "died" in caplog.text and "Ray restarts it" in caplog.text
    mean, _ = agent.evaluate(IdentityEnv, episodes=20)
    assert mean >= 9.5
    assert not lingering_actors()
    head.add_node(num_cpus=2)  # give the other tests their second node back
    head.wait_for_nodes()


def test_an_env_failing_in_an_actor_raises_from_fit(cluster):
    agent = make_agent()
    with pytest.raises(RuntimeError, match="FaultyEnv exploded in step") as raised:
        agent.fit(one_faulty(3, fail_after=200), total_steps=10**7, workers=1, envs_per_worker=4, verbose=0,
                  backend=RayBackend(actors=1, segments_per_message=2))
    notes = " ".join(getattr(raised.value, "__notes__", []))
    assert "keras_a3c worker" in notes and "Ray actor" in notes
    assert not lingering_actors()


def test_an_actor_that_cannot_be_built_ends_the_fit_at_once(cluster):
    agent = make_agent()
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="(?s)Ray actor 0 could not be built.*no such device"):
        agent.fit(FailsWhereShipped(), total_steps=10**7, workers=1, envs_per_worker=2, verbose=0,
                  backend=RayBackend(actors=1))
    assert time.perf_counter() - start < 60  # not after stall_seconds (300)
    assert not lingering_actors()


def test_a_learner_side_failure_stops_every_actor(cluster):
    class Explode(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if logs["env_steps"] > 2_000:
                raise ValueError("callback exploded")

    agent = make_agent()
    with pytest.raises(ValueError, match="callback exploded"):
        agent.fit(IdentityEnv, total_steps=10**7, workers=1, envs_per_worker=4, verbose=0, callbacks=[Explode()],
                  backend=RayBackend(actors=1))
    assert not lingering_actors()
    assert np.isfinite(agent.training_state.env_steps)


def test_the_example_runs_on_the_cluster_with_its_ray_flags(cluster, tmp_path):
    head, _ = cluster
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, os.path.join(root, "examples", "cartpole.py"), f"--ray_address={head.address}",
         "--ray_actors=1", "--workers=1", "--envs_per_worker=4", "--total_steps=3000", "--eval_episodes=0",
         "--verbose=0", f"--export_dir={tmp_path / 'policy'}", f"--checkpoint_dir={tmp_path / 'checkpoints'}"],
        capture_output=True, text=True, cwd=root, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert out.returncode == 0, out.stderr
    assert "trained " in out.stdout and (tmp_path / "policy" / "saved_model.pb").exists()
    assert keras_a3c.load(keras_a3c.latest_checkpoint(tmp_path / "checkpoints")).env_steps >= 3000
