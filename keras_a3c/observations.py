"""How observations travel: flat float32 rows in worker buffers and segments, the space's own structure at
the network's input.

A `Box` observation is one array; a `Dict` or `Tuple` observation (one level of nesting) has one leaf
per key or position, each a `Box` (any shape), a `Discrete` (an integer, one-hot encoded inside the
network by `actor_critic_mlp`) or a 1-D `MultiBinary`. A Dict entry named `MASK_KEY` is the invalid-
action mask (see `keras_a3c.distributions.masked_params`). `ObservationCodec` flattens a batch of
observations of any of these into one float32 row per observation (the leaves side by side, in the
space's key order) and gives it back to the network in the space's structure: a tensor for `Box`, a dict
{key: tensor} for `Dict`, a tuple for `Tuple`, each leaf [N, *leaf_shape] (a `Discrete` leaf as int32
[N]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import tensorflow as tf

Leaf = gym.spaces.Box | gym.spaces.Discrete | gym.spaces.MultiBinary

# The entry of a Dict observation that holds the invalid-action mask (PettingZoo's convention): 1 where
# an action may be taken, 0 where not, one flag per logit of a Discrete or MultiDiscrete action space.
MASK_KEY = "action_mask"


def leaves_of(space: gym.Space) -> list[tuple[str | int | None, Leaf]]:
    """(key, leaf space) of each leaf, in order: key None for a `Box`, the dict key for a `Dict`, the
    position for a `Tuple`. Anything else is a `ValueError` naming the space."""
    if isinstance(space, gym.spaces.Box):
        return [(None, space)]
    if isinstance(space, gym.spaces.Dict):
        leaves: list[tuple[str | int | None, gym.Space]] = list(space.spaces.items())
    elif isinstance(space, gym.spaces.Tuple):
        leaves = list(enumerate(space.spaces))
    else:
        raise ValueError(
            f"unsupported observation space {space}: keras_a3c needs a Box observation space, or a Dict or "
            "Tuple of Box, Discrete and MultiBinary spaces (or wrap the env, e.g. with "
            "gymnasium.wrappers.FlattenObservation)"
        )
    if not leaves:
        raise ValueError(f"unsupported observation space {space}: an empty {type(space).__name__} has nothing "
                         "to observe")
    for key, leaf in leaves:
        if isinstance(leaf, (gym.spaces.Dict, gym.spaces.Tuple)):
            raise ValueError(f"unsupported observation space {space}: its entry {key!r} is a {type(leaf).__name__}; "
                             "keras_a3c supports one level of nesting (flatten the inner one with a wrapper)")
        if isinstance(leaf, gym.spaces.Discrete) and int(leaf.start) != 0:
            raise ValueError(f"unsupported observation space {space}: its entry {key!r}, {leaf}, must start at 0")
        if isinstance(leaf, gym.spaces.MultiBinary) and len(leaf.shape) != 1:
            raise ValueError(f"unsupported observation space {space}: its entry {key!r}, {leaf}, must be 1-D")
        if not isinstance(leaf, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiBinary)):
            raise ValueError(f"unsupported observation space {space}: its entry {key!r} is {leaf}; the entries of "
                             "a Dict or Tuple observation must be Box, Discrete or MultiBinary spaces")
    return leaves


class ObservationCodec:
    """Flattens observations into float32 rows [B, F] and gives rows back in their structure.

    Args:
      leaves: (key, shape, integer) of each leaf, in order: key None for a plain array, a dict key, or
        a position in a tuple; `integer` for a Discrete leaf (shape (), an int32 index at the network).
      structure: "array", "dict" or "tuple".
    """

    def __init__(self, leaves: Sequence[tuple[str | int | None, tuple[int, ...], bool]], structure: str):
        self.keys = [key for key, _, _ in leaves]
        self.shapes = [tuple(shape) for _, shape, _ in leaves]
        self.integer = [integer for _, _, integer in leaves]
        self.structure_kind = structure
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.size = sum(self.sizes)
        self._splits = list(np.cumsum(self.sizes)[:-1])
        self.mask_columns: slice | None = None  # where the action mask lies in a flat row, if there is one
        if structure == "dict" and MASK_KEY in self.keys:
            start = sum(self.sizes[:self.keys.index(MASK_KEY)])
            self.mask_columns = slice(start, start + self.sizes[self.keys.index(MASK_KEY)])

    @classmethod
    def for_space(cls, space: gym.Space) -> ObservationCodec:
        """The codec of an observation space (see `leaves_of`)."""
        leaves = [(key, () if isinstance(leaf, gym.spaces.Discrete) else tuple(leaf.shape),
                   isinstance(leaf, gym.spaces.Discrete)) for key, leaf in leaves_of(space)]
        kinds = {gym.spaces.Dict: "dict", gym.spaces.Tuple: "tuple"}
        return cls(leaves, next((kind for t, kind in kinds.items() if isinstance(space, t)), "array"))

    @classmethod
    def for_network(cls, network) -> ObservationCodec:
        """The codec of a Keras model's inputs: one input, a dict of inputs or a list of inputs (integer
        dtypes are Discrete leaves)."""
        inputs = network.input
        if isinstance(inputs, dict):
            items, kind = list(inputs.items()), "dict"
        elif isinstance(inputs, (list, tuple)):
            items, kind = list(enumerate(inputs)), "tuple"
        else:
            items, kind = [(None, inputs)], "array"
        # An integer input of shape [B] is a Discrete entry; any other input takes float32 rows.
        leaves = [(key, tuple(tensor.shape[1:]), "int" in str(tensor.dtype) and len(tensor.shape) == 1)
                  for key, tensor in items]
        return cls(leaves, kind)

    def parts(self, observations: Any) -> list[Any]:
        """The leaves of observations in their structure, in order (a `ValueError` if the structure is wrong)."""
        if self.structure_kind == "dict":
            if not isinstance(observations, dict) or set(observations) != set(self.keys):
                got = sorted(observations) if isinstance(observations, dict) else type(observations).__name__
                raise ValueError(f"observations must be a dict with the keys {self.keys}, got {got}")
            return [observations[key] for key in self.keys]
        if self.structure_kind == "tuple":
            if not isinstance(observations, (tuple, list)) or len(observations) != len(self.keys):
                raise ValueError(f"observations must be a tuple of {len(self.keys)} arrays")
            return list(observations)
        return [observations]

    def rebuild(self, parts: Sequence[Any]) -> Any:
        """The inverse of `parts`: leaves in order -> the structure."""
        if self.structure_kind == "dict":
            return dict(zip(self.keys, parts, strict=True))
        if self.structure_kind == "tuple":
            return tuple(parts)
        return parts[0]

    def flatten(self, observations: Any) -> np.ndarray:
        """A batch of observations (an array [B, *shape], or a dict / tuple of such arrays) -> float32 [B, F]."""
        parts = [np.asarray(part) for part in self.parts(observations)]
        batch = parts[0].shape[0]
        if len(parts) == 1:  # the hot path of a Box observation: a view, cast only when needed
            return parts[0].reshape(batch, -1).astype(np.float32, copy=False)
        return np.concatenate([part.reshape(batch, -1) for part in parts], axis=1).astype(np.float32, copy=False)

    def batch(self, observations: Any) -> tuple[Any, bool]:
        """(a batch in the network's structure, whether one observation was given): takes one observation
        or a batch of them, in their structure; a leaf of the wrong shape is a `ValueError` naming it."""
        parts = [np.asarray(part) for part in self.parts(observations)]
        single = all(part.shape == shape for part, shape in zip(parts, self.shapes, strict=True))
        if single:
            parts = [part[None] for part in parts]
        for key, part, shape in zip(self.keys, parts, self.shapes, strict=True):
            if part.shape[1:] != shape:
                where = "observations" if key is None else f"observations[{key!r}]"
                raise ValueError(f"{where} must have shape [batch, {', '.join(map(str, shape))}], got {part.shape}")
        return self.structure_numpy(self.flatten(self.rebuild(parts))), single

    def structure(self, flat: tf.Tensor) -> Any:
        """float32 rows [N, F] -> the network's input: a tensor, dict or tuple of leaves [N, *leaf_shape]
        (a Discrete leaf int32 [N])."""
        parts = tf.split(flat, self.sizes, axis=1) if len(self.sizes) > 1 else [flat]
        return self.rebuild([tf.cast(tf.round(part[:, 0]), tf.int32) if integer else tf.reshape(part, [-1, *shape])
                              for part, shape, integer in zip(parts, self.shapes, self.integer, strict=True)])

    def structure_numpy(self, flat: np.ndarray) -> Any:
        """The numpy twin of `structure`."""
        parts = np.split(flat, self._splits, axis=1)
        return self.rebuild([np.rint(part[:, 0]).astype(np.int32) if integer
                              else part.reshape(-1, *shape).astype(np.float32, copy=False)
                              for part, shape, integer in zip(parts, self.shapes, self.integer, strict=True)])

    def specs(self, batch: int | None = None) -> Any:
        """`tf.TensorSpec`s of the network's input in its structure, each named: "observations" for one
        input, its key for a dict entry, "observations_<i>" for a tuple entry."""
        names = ["observations" if key is None else key if self.structure_kind == "dict" else f"observations_{key}"
                 for key in self.keys]
        return self.rebuild([tf.TensorSpec([batch, *shape], tf.int32 if integer else tf.float32, name=str(name))
                             for name, shape, integer in zip(names, self.shapes, self.integer, strict=True)])

    def zeros(self, batch: int) -> Any:
        """A batch of all-zero observations in the network's structure."""
        return self.structure_numpy(np.zeros((batch, self.size), np.float32))
