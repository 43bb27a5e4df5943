"""A3CConfig and the presets: validation, compile with a config, and what a preset builds."""

import ast
import dataclasses
import importlib
import inspect
import os

import gymnasium as gym
import pytest

import keras_a3c
from keras_a3c import presets
from keras_a3c.config import A3CConfig
from keras_a3c.networks import CNN_ARCHITECTURES
from keras_a3c.recurrent import state_sizes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("n_steps", 0, "n_steps must be an integer >= 1, got 0"),
        ("n_steps", 2.5, "n_steps"),
        ("gamma", 1.01, "gamma must be in"),
        ("entropy_coef", float("nan"), "entropy_coef"),
        ("value_coef", -0.5, "value_coef"),
        ("max_grad_norm", -1.0, "max_grad_norm"),
        ("reward_scale", float("inf"), "reward_scale"),
        ("hogwild", "yes", "hogwild"),
        ("entropy_decay_updates", -1, "entropy_decay_updates must be an integer >= 0, got -1"),
        ("entropy_decay_updates", 2.5, "entropy_decay_updates"),
        ("importance_clip", 0.0, "importance_clip must be > 0 or None, got 0.0"),
        ("importance_clip", float("nan"), "importance_clip"),
    ],
)
def test_a_bad_setting_is_named_when_the_config_is_made(field, value, message):
    with pytest.raises(ValueError, match=message):
        A3CConfig(**{field: value})


def test_config_is_frozen_and_replace_checks_its_names():
    config = A3CConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.gamma = 0.5
    assert config.replace(gamma=0.5).gamma == 0.5 and config.gamma == 0.99
    with pytest.raises(TypeError, match="unknown A3C setting.*entropy"):
        config.replace(entropy=0.1)
    assert A3CConfig.from_dict(A3CConfig(n_steps=7, max_grad_norm=2.0).to_dict()) == A3CConfig(n_steps=7,
                                                                                               max_grad_norm=2.0)


def test_compile_takes_a_config_and_keyword_overrides():
    env = gym.make("CartPole-v1")
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space, (8,)))
    agent.compile("adam", config=A3CConfig(n_steps=3, gamma=0.9), entropy_coef=0.05)
    assert agent.config == A3CConfig(n_steps=3, gamma=0.9, entropy_coef=0.05)
    assert agent.learner.config is agent.config
    agent.compile("adam")
    assert agent.config == A3CConfig()
    with pytest.raises(TypeError, match="unknown A3C setting"):
        agent.compile("adam", learning_rate=0.1)


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_a_preset_builds_a_compiled_agent_with_its_settings(name, monkeypatch):
    preset = presets.get(name)
    if preset.env.startswith("MinAtar/"):
        pytest.importorskip("minatar.gym").register_envs()
    registered_by = {"CartPoleNoVelocity-v1": "memory_env", "AtariA3C/Pong-v5": "atari_env"}  # in examples/
    if preset.env in registered_by:
        if preset.env.startswith("AtariA3C/"):
            pytest.importorskip("ale_py")
            pytest.importorskip("cv2")
        monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples"))
        importlib.import_module(registered_by[preset.env])
    agent = preset.make_agent()
    assert agent.config == preset.config
    assert agent.optimizer.__class__.__name__.lower() == preset.optimizer
    assert float(agent.optimizer.epsilon) == pytest.approx(preset.epsilon)
    assert float(agent.optimizer.learning_rate) == pytest.approx(preset.learning_rate)
    hidden = [layer.units for layer in agent.network.layers if layer.name.startswith("trunk_")]
    if preset.network == "mlp":
        assert tuple(hidden) == preset.hidden_units
    else:
        convolutions, units = CNN_ARCHITECTURES[preset.network]
        assert hidden == [units]
        assert [layer.filters for layer in agent.network.layers if layer.name.startswith("conv_")] == [
            filters for filters, _, _ in convolutions]
    assert agent.action_space == gym.make(preset.env).action_space
    assert state_sizes(agent.network) == ((preset.lstm_units,) * 2 if preset.lstm_units else ())


def test_the_cartpole_preset_decays_its_learning_rate_to_a_tenth():
    optimizer = presets.CARTPOLE.make_optimizer()
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(4e-3)
    assert float(schedule(presets.CARTPOLE.learning_rate_decay_updates * 2)) == pytest.approx(4e-4)


def test_unknown_presets_and_bad_preset_values_are_named():
    with pytest.raises(ValueError, match="unknown preset 'acrobot'"):
        presets.get("acrobot")
    with pytest.raises(ValueError, match="workers"):
        dataclasses.replace(presets.CARTPOLE, workers=0)
    with pytest.raises(ValueError, match="hidden_units"):
        dataclasses.replace(presets.CARTPOLE, hidden_units=())
    with pytest.raises(ValueError, match="target_eval_episodes"):
        dataclasses.replace(presets.CARTPOLE, target_eval_episodes=-1)


def test_a_preset_stops_on_its_target_with_its_greedy_check():
    stop = presets.CARTPOLE.stop_on_target(verbose=1)
    assert (stop.target, stop.eval_env, stop.eval_episodes, stop.verbose) == (495.0, "CartPole-v1", 20, 1)
    stop = presets.PENDULUM.stop_on_target()
    assert (stop.target, stop.eval_env) == (-175.0, None)


def _imports(path: str, package: str) -> set[str]:
    """The keras_a3c modules a module imports, at its top or inside functions (TYPE_CHECKING ones excluded)."""
    tree = ast.parse(open(path).read())
    checking = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
                and ast.unparse(stmt.test) == "TYPE_CHECKING" for node in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(package))
    return found


def test_no_import_cycle_in_the_package():
    """Every module of keras_a3c, its imports (even those inside functions) as edges: no cycle."""
    directory = os.path.join(ROOT, "keras_a3c")
    modules = {f"keras_a3c.{name[:-3]}" for name in os.listdir(directory)
               if name.endswith(".py") and name != "__init__.py"}
    graph = {module: {m for m in _imports(os.path.join(directory, module.split(".")[1] + ".py"), "keras_a3c")
                      if m in modules} for module in modules}
    assert graph["keras_a3c.agent"] >= {"keras_a3c.trainer", "keras_a3c.saving", "keras_a3c.learner"}
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            pytest.fail(f"import cycle: {' -> '.join(visiting[visiting.index(module):] + [module])}")
        if module in done:
            return
        visiting.append(module)
        for dependency in graph[module]:
            visit(dependency)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_defaults_preset_is_what_the_library_does_without_arguments():
    """presets.DEFAULTS (examples/train.py, flags/defaults.flags) must say what A3C(actor_critic_mlp(...)),
    compile() and fit() do when given nothing."""
    defaults = presets.DEFAULTS
    assert defaults.config == A3CConfig()
    def settings(optimizer):
        return type(optimizer), {k: v for k, v in optimizer.get_config().items() if k != "name"}

    library = settings(keras_a3c.config.default_optimizer())
    assert settings(defaults.make_optimizer()) == library
    builder = inspect.signature(keras_a3c.actor_critic_mlp).parameters
    assert builder["normalize_observations"].default == defaults.normalize_observations
    assert tuple(builder["hidden_units"].default) == defaults.hidden_units
    assert builder["std"].default == defaults.std and builder["log_std_init"].default == defaults.log_std_init
    fit = inspect.signature(keras_a3c.A3C.fit).parameters
    assert (fit["workers"].default, fit["envs_per_worker"].default, fit["steps_per_epoch"].default) == (
        defaults.workers, defaults.envs_per_worker, defaults.steps_per_epoch)
    env = gym.make("CartPole-v1")
    agent = keras_a3c.A3C(keras_a3c.actor_critic_mlp(env.observation_space, env.action_space))
    agent.compile()
    assert agent.config == A3CConfig() and settings(agent.optimizer) == library
