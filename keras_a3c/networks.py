"""Actor-critic networks: observation [B, *obs_shape] -> (logits [B, A], value [B, 1])."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import keras
import numpy as np

from keras_a3c.envs import check_spaces


def actor_critic_mlp(
    observation_space: gym.spaces.Box,
    action_space: gym.spaces.Discrete,
    hidden_units: Sequence[int] = (64, 64),
    activation: str = "tanh",
    name: str = "actor_critic",
) -> keras.Model:
    """A shared-trunk MLP with a policy-logits head and a value head (A3C, section 5.1).

    Args:
      observation_space: a `Box`; its shape is the model's input shape.
      action_space: a `Discrete(A)`; the logits head has A units.
      hidden_units: widths of the shared Dense trunk.
      activation: the trunk's activation.
      name: the model's name.

    Returns:
      A functional `keras.Model` mapping float32 [B, *obs_shape] to
      (logits [B, A], value [B, 1]).
    """
    check_spaces(observation_space, action_space)
    inputs = keras.Input(observation_space.shape, name="observation")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(observation_space.shape) > 1 else inputs
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=keras.initializers.Orthogonal(np.sqrt(2.0)),
            name=f"trunk_{i}",
        )(x)
    # Small initial logits keep the first policy close to uniform (as in SB3/Baselines).
    logits = keras.layers.Dense(
        int(action_space.n), kernel_initializer=keras.initializers.Orthogonal(0.01), name="logits"
    )(x)
    value = keras.layers.Dense(1, kernel_initializer=keras.initializers.Orthogonal(1.0), name="value")(x)
    return keras.Model(inputs, [logits, value], name=name)


def check_network(network: keras.Model, observation_space: gym.spaces.Box, action_space: gym.spaces.Discrete) -> None:
    """Raise a `ValueError` that names the problem unless `network` maps a batch of
    observations to (logits [B, action_space.n], value [B] or [B, 1])."""
    if not isinstance(network, keras.Model):
        raise TypeError(f"the network must be a keras.Model, got {type(network).__name__}")
    batch = np.zeros((2, *observation_space.shape), dtype=np.float32)
    try:
        outputs = network(batch)
    except Exception as exc:
        raise ValueError(
            f"the network could not be called on observations of shape {batch.shape} "
            f"(observation space {observation_space}): {exc}"
        ) from exc
    if not isinstance(outputs, (list, tuple)) or len(outputs) != 2:
        raise ValueError(
            "the network must return two outputs (logits [B, num_actions], value [B, 1]); "
            f"got {type(outputs).__name__} of length {len(outputs) if isinstance(outputs, (list, tuple)) else 1}"
        )
    logits, value = outputs
    expected = (2, int(action_space.n))
    if tuple(logits.shape) != expected:
        raise ValueError(
            f"the network's first output (logits) must have shape [B, {action_space.n}] for the action "
            f"space {action_space}; for a batch of 2 it returned {tuple(logits.shape)}"
        )
    if tuple(value.shape) not in ((2,), (2, 1)):
        raise ValueError(
            f"the network's second output (value) must have shape [B] or [B, 1]; "
            f"for a batch of 2 it returned {tuple(value.shape)}"
        )
