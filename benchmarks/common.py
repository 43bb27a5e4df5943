"""What the benchmarks share: the default CartPole-v1 configuration of `examples/cartpole.py`
(read from flags/cartpole.flags, which a test keeps equal to the example's flag defaults)."""

from __future__ import annotations

import os

import numpy as np

ENV_ID = "CartPole-v1"
SOLVED_AT = 475.0  # mean return of the last WINDOW finished training episodes
WINDOW = 100
FLAGFILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flags", "cartpole.flags")


def flagfile_config(path: str = FLAGFILE) -> dict[str, str]:
    """`--name=value` lines of a flagfile as {name: value}; `--noname` as 'false'."""
    config = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("--"):
                name, sep, value = line[2:].partition("=")
                if not sep and name.startswith("no"):
                    name, value = name[2:], "false"
                config[name] = value
    return config


def default_agent(hogwild: bool | None = None):
    """The example's actor-critic and compile settings, built on this thread."""
    import keras

    import keras_a3c

    config = flagfile_config()
    obs_space, action_space = keras_a3c.envs.env_spaces(ENV_ID)
    network = keras_a3c.actor_critic_mlp(
        obs_space, action_space, hidden_units=[int(u) for u in config["hidden_units"].split(",")]
    )
    agent = keras_a3c.A3C(network)
    agent.compile(
        optimizer=keras.optimizers.Adam(float(config["learning_rate"]), epsilon=float(config["adam_epsilon"])),
        entropy_coef=float(config["entropy_coef"]),
        value_coef=float(config["value_coef"]),
        gamma=float(config["gamma"]),
        n_steps=int(config["n_steps"]),
        max_grad_norm=float(config["max_grad_norm"]) or None,
        hogwild=config["hogwild"] != "false" if hogwild is None else hogwild,
    )
    return agent


def solve_point(times: np.ndarray, steps: np.ndarray, returns: np.ndarray) -> tuple[float, int] | None:
    """(seconds, env steps) at which the mean of the last WINDOW returns first reaches SOLVED_AT."""
    if len(returns) < WINDOW:
        return None
    means = np.convolve(returns, np.ones(WINDOW) / WINDOW, mode="valid")  # means[i] ends at episode i + WINDOW - 1
    hits = np.flatnonzero(means >= SOLVED_AT)
    if not len(hits):
        return None
    i = hits[0] + WINDOW - 1
    return float(times[i]), int(steps[i])
