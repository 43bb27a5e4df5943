"""Write and read an agent's training state (`A3C.get_train_state`), atomically; list checkpoints.

This module handles plain state (JSON-able settings, named numpy arrays) and files; the agent turns
itself into that state and back (`A3C.get_train_state` / `A3C.set_train_state`, `keras_a3c.load`).
A save is a directory:
  agent.json  format tag and version, the network's Keras config, the action space, the
              compile settings with the optimizer's Keras config, the global counters
              (env steps, updates, episodes, training seconds) and the agent's RNG state;
  state.npz   the network weights, the optimizer variables (iterations and slots) and the
              episode statistics (the recent returns and lengths, the episode log).

It is written into a hidden staging directory beside `path`, flushed to disk and then
renamed into place, so a process killed while saving leaves any earlier save intact and
never a half-written `path`. Not saved: the envs and the episodes in progress (a resumed
`fit` starts fresh episodes, as Stable-Baselines3 does).

    agent.save("run/agent")
    agent = keras_a3c.load("run/agent")
    agent.fit("CartPole-v1", total_steps=100_000)   # counters, optimizer and schedule carry on
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from typing import Any

import gymnasium as gym
import keras
import numpy as np

from keras_a3c.files import is_staging, write_atomically

FORMAT = "keras_a3c.agent"
FORMAT_VERSION = 6
# The compile settings each format version added, with the values that train as saves before it did.
_ADDED_COMPILE = {
    2: {"gae_lambda": 1.0, "normalize_advantages": False, "normalize_rewards": False, "reward_clip": 10.0},
    3: {"action_bound_coef": 0.0},
    4: {"clip_raw_rewards": None},
    5: {"jit_compile": False},
    6: {"importance_clip": None},
}
CONFIG_FILE = "agent.json"
ARRAYS_FILE = "state.npz"


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_PREFIX = "ckpt-"


def checkpoints(directory: str | os.PathLike) -> list[str]:
    """The complete checkpoints `ckpt-<global env step>` in `directory`, oldest first
    (staging directories of saves in progress or killed are hidden and never listed)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return []
    found = [
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.startswith(CHECKPOINT_PREFIX)
        and name[len(CHECKPOINT_PREFIX) :].isdigit()
        and os.path.isdir(os.path.join(directory, name))
    ]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(directory: str | os.PathLike) -> str | None:
    """The newest complete checkpoint in `directory`, or None."""
    found = checkpoints(directory)
    return found[-1] if found else None


def checkpoint_step(path: str | os.PathLike) -> int:
    """The global env step in a checkpoint's name."""
    return int(os.path.basename(os.fspath(path))[len(CHECKPOINT_PREFIX) :])


def checkpoint_path(directory: str | os.PathLike, env_steps: int) -> str:
    return os.path.join(os.fspath(directory), f"{CHECKPOINT_PREFIX}{env_steps:012d}")


def remove_stale_staging(directory: str | os.PathLike) -> None:
    """Delete the staging directories that killed checkpoint saves left in `directory`."""
    for name in os.listdir(directory):
        if name.startswith(f".{CHECKPOINT_PREFIX}") and is_staging(name):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


# ----------------------------------------------------------------------------- spaces


def space_to_config(space: gym.Space) -> dict:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(), "dtype": space.dtype.name}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist(),
                "dtype": space.dtype.name}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": int(space.n) if np.ndim(space.n) == 0 else [int(n) for n in space.n]}
    raise ValueError(f"cannot save an agent for the action space {space}")


def space_from_config(config: dict) -> gym.Space:
    if config["type"] == "Discrete":
        return gym.spaces.Discrete(config["n"], start=config["start"])
    if config["type"] == "Box":
        dtype = np.dtype(config["dtype"])
        return gym.spaces.Box(np.array(config["low"], dtype), np.array(config["high"], dtype), dtype=dtype)
    if config["type"] == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(config["nvec"], dtype=np.dtype(config["dtype"]), start=config["start"])
    if config["type"] == "MultiBinary":
        return gym.spaces.MultiBinary(config["n"])
    raise ValueError(f"unknown action space type {config['type']!r}")


# ----------------------------------------------------------------------------- save and load

TrainState = tuple[dict[str, Any], dict[str, np.ndarray]]


def write_state(path: str | os.PathLike, state: TrainState, overwrite: bool = False) -> str:
    """Write a training state (`A3C.get_train_state`: JSON-able settings, named arrays) to the
    directory `path`, atomically; returns its absolute path. An existing `path` is a
    `FileExistsError` unless `overwrite`."""
    settings, arrays = state
    try:
        text = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **settings}, indent=1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save the agent to {path}: its configuration is not serialisable: {exc}") from exc

    def write(directory: str) -> None:
        os.mkdir(directory)
        with open(os.path.join(directory, CONFIG_FILE), "w") as f:
            f.write(text)
        np.savez(os.path.join(directory, ARRAYS_FILE), **arrays)

    return write_atomically(path, write, "save", overwrite=overwrite)


def read_state(path: str | os.PathLike) -> TrainState:
    """The training state saved at `path` (what `write_state` wrote).

    Raises:
      FileNotFoundError: nothing at `path`.
      ValueError: `path` is not a keras_a3c save, or it is corrupt or incomplete.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"no keras_a3c save at {path}")
    return _read_config(path), _read_arrays(path)


def rebuild_network(settings: dict[str, Any], path: str) -> keras.Model:
    """The network of a saved state, rebuilt from its Keras config (weights not yet set)."""
    try:
        return keras.saving.deserialize_keras_object(settings["network"])
    except Exception as exc:
        raise ValueError(
            f"cannot rebuild the network saved in {path}: {exc}. Custom layers and models must be "
            "registered with keras.saving.register_keras_serializable (and imported), or pass network="
        ) from exc


def _read_config(path: str) -> dict:
    file = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(file):
        raise ValueError(f"{path} is not a keras_a3c save: it has no {CONFIG_FILE}")
    try:
        with open(file) as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the keras_a3c save at {path} is corrupt: {file} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path} is not a keras_a3c save: {file} has no format {FORMAT!r}")
    version = config.get("format_version")
    if version not in range(1, FORMAT_VERSION + 1):
        raise ValueError(
            f"the keras_a3c save at {path} has format version {version!r}; this keras_a3c reads versions 1 to "
            f"{FORMAT_VERSION}"
        )
    if config.get("compile") is not None:
        for added in range(version + 1, FORMAT_VERSION + 1):
            config["compile"] = {**_ADDED_COMPILE[added], **config["compile"]}
    return config


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    file = os.path.join(path, ARRAYS_FILE)
    try:
        with np.load(file, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError as exc:
        raise ValueError(f"the keras_a3c save at {path} is incomplete: it has no {ARRAYS_FILE}") from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"the keras_a3c save at {path} is corrupt: cannot read {file} ({exc})") from exc


def assign(variables: list, values: list[np.ndarray], what: str) -> None:
    """Set `variables` to saved `values`, all or none: a count or shape that differs is a `ValueError`."""
    if len(variables) != len(values):
        raise ValueError(f"the saved state holds {len(values)} {what} variables, the {what} has {len(variables)}")
    for variable, value in zip(variables, values, strict=True):
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"the saved state does not fit the {what}: {variable.path} has shape {tuple(variable.shape)}, "
                f"the saved value {value.shape}"
            )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
