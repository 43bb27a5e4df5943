"""The contract of a recurrent actor-critic network, and the state it carries from step to step.

A recurrent network is a step function, state in and state out: a Keras model called as

    params, value, *new_state = network([observations, *state])

where `observations` is the batch in the observation space's structure (an array, or a dict / tuple of
arrays) and `state` one or more float32 tensors [B, S_i] (an LSTM's h and c), each returned updated as
`new_state` in the same order and shape. A network with two outputs (params, value) is feedforward.
The builders make one from any Keras RNN cell (`actor_critic_mlp(..., lstm_units=64)`, or `cell=` a
`keras.layers.GRUCell`, ...); a user's own model needs only these inputs and outputs. Layers with
`stateful=True` keep state inside the layer, shared by every env and worker: they are rejected.

Outside the network (the agent's `predict`, the exported policy) the state travels as one float32
array [B, S] with the parts side by side (S = sum S_i); all zeros begins an episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np


def state_sizes(network: keras.Model) -> tuple[int, ...]:
    """S_i of each state tensor of a recurrent network (see the module docstring); () for a feedforward one."""
    outputs = getattr(network, "outputs", None)
    if outputs is None or len(outputs) <= 2:
        return ()
    return tuple(int(output.shape[-1]) for output in outputs[2:])


def observation_input(network: keras.Model) -> Any:
    """The observation part of a Keras model's symbolic input: all of it for a feedforward network, the
    first entry of `[observations, *state]` for a recurrent one."""
    return network.input[0] if state_sizes(network) else network.input


def check_recurrent(network: keras.Model) -> None:
    """A `ValueError` naming the problem if a recurrent network's state inputs do not match its state
    outputs, or if any layer keeps state itself (`stateful=True`)."""
    for layer in network._flatten_layers(include_self=False):
        if getattr(layer, "stateful", False):
            raise ValueError(
                f"the network's layer {layer.name!r} is stateful (stateful=True): its state would be shared by "
                "every env and worker. Pass the state in and out instead (see keras_a3c.recurrent), e.g. "
                "actor_critic_mlp(..., lstm_units=64)")
    sizes = state_sizes(network)
    if not sizes:
        return
    inputs = network.input
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 1 + len(sizes):
        raise ValueError(
            f"a recurrent network ({2 + len(sizes)} outputs: params, value and {len(sizes)} state tensors) must "
            f"take [observations, *state], one input per state tensor: {1 + len(sizes)} inputs, got "
            f"{len(inputs) if isinstance(inputs, (list, tuple)) else 1}")
    for i, (state_input, output) in enumerate(zip(inputs[1:], network.outputs[2:], strict=True)):
        if tuple(state_input.shape[1:]) != tuple(output.shape[1:]) or len(state_input.shape) != 2:
            raise ValueError(
                f"the recurrent network's state {i} goes in with shape {tuple(state_input.shape)} and comes out "
                f"with shape {tuple(output.shape)}: each state must be [B, S] in and out")


def network_input(observations: Any, state: Sequence) -> Any:
    """What a network is called with: the observations, or [observations, *state] for a recurrent one (a
    non-empty `state`)."""
    return [observations, *state] if len(state) else observations


def begin_episodes(state: Sequence[np.ndarray], starts: np.ndarray) -> list[np.ndarray]:
    """The state parts [B, S_i] with the rows where `starts` [B] is true set to zeros: episodes begin there."""
    return [np.where(starts[:, None], np.float32(0.0), part) for part in state]


def zero_state(sizes: Sequence[int], batch: int) -> list[np.ndarray]:
    """The state that begins an episode: zeros [batch, S_i] for each part."""
    return [np.zeros((batch, size), np.float32) for size in sizes]


def split_state(state: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """One array [B, S] -> its parts [B, S_i] (a `ValueError` if its width is not S)."""
    state = np.asarray(state, np.float32)
    if state.ndim != 2 or state.shape[1] != sum(sizes):
        raise ValueError(f"the recurrent state must have shape [batch, {sum(sizes)}], got {state.shape}")
    return np.split(state, np.cumsum(sizes)[:-1], axis=1)
