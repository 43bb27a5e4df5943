"""How observations travel: rows in their own dtype in worker buffers and segments, the space's own
structure at the network's input.

A `Box` observation is one array; a `Dict` or `Tuple` observation (one level of nesting) has one leaf
per key or position, each a `Box` (any shape), a `Discrete` (an integer, one-hot encoded inside the
network by `actor_critic_mlp`) or a 1-D `MultiBinary`. A Dict entry named `MASK_KEY` is the invalid-
action mask (see `keras_a3c.distributions.masked_params`). `ObservationCodec` turns a batch of
observations of any of these into rows: one 2-D array [B, F_g] per storage dtype g, each leaf flattened
into its dtype's row beside the other leaves of that dtype, in the space's key order. A leaf keeps its
own dtype (a uint8 image stays 1 byte per pixel in a segment) except that floats are stored as float32
(the network computes in float32), bool as uint8 and a `Discrete` index as int32. The codec gives rows
back to the network in the space's structure: a tensor for `Box`, a dict {key: tensor} for `Dict`, a
tuple for `Tuple`, each leaf [N, *leaf_shape] in the dtype of the network's input for it (float32 by
default; a network may take an image in its own uint8, see `actor_critic_cnn`), a `Discrete` leaf
as an int32 index [N].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import tensorflow as tf

from keras_a3c.recurrent import observation_input

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


def storage_dtype(dtype: Any) -> np.dtype:
    """The dtype values of `dtype` are stored in (see the module docstring): float32 for any float,
    uint8 for bool, any other dtype as it is."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    return np.dtype(np.uint8) if dtype.kind == "b" else dtype


_KINDS = {gym.spaces.Dict: "dict", gym.spaces.Tuple: "tuple"}


def _network_inputs(network) -> tuple[list[tuple[str | int | None, Any]], str]:
    """([(key, input tensor)], structure) of a Keras model's observations (a recurrent network's state inputs
    left out): one input, a dict or a list of inputs."""
    inputs = observation_input(network)
    if isinstance(inputs, dict):
        return list(inputs.items()), "dict"
    if isinstance(inputs, (list, tuple)):
        return list(enumerate(inputs)), "tuple"
    return [(None, inputs)], "array"


class ObservationCodec:
    """Turns observations into rows, one array [B, F_g] per storage dtype, and gives rows back in their
    structure.

    Args:
      leaves: (key, shape, integer, dtype, input dtype) of each leaf, in order: key None for a plain
        array, a dict key or a position in a tuple; `integer` for a Discrete leaf (shape (), an int32
        index at the network); `dtype` the leaf's storage dtype; `input dtype` the network's.
      structure: "array", "dict" or "tuple".
    """

    def __init__(self, leaves: Sequence[tuple[str | int | None, tuple[int, ...], bool, Any, Any]], structure: str):
        self.keys = [leaf[0] for leaf in leaves]
        self.shapes = [tuple(leaf[1]) for leaf in leaves]
        self.integer = [leaf[2] for leaf in leaves]
        self.dtypes = [np.dtype(leaf[3]) for leaf in leaves]
        self.input_dtypes = [tf.as_dtype(leaf[4]) for leaf in leaves]
        self.structure_kind = structure
        self.sizes = [math.prod(shape) for shape in self.shapes]
        # One row per storage dtype, float32 first (it travels inside the segment's float32 array).
        float32 = np.dtype(np.float32)
        self.groups = sorted(dict.fromkeys(self.dtypes), key=lambda dtype: dtype != float32)
        members = [[i for i, dtype in enumerate(self.dtypes) if dtype == group] for group in self.groups]
        self.group_sizes = [sum(self.sizes[i] for i in group) for group in members]
        self._members = members
        self._where: list[tuple[int, slice]] = [(0, slice(0))] * len(leaves)  # (row, columns) of each leaf
        for g, group in enumerate(members):
            start = 0
            for i in group:
                self._where[i] = (g, slice(start, start + self.sizes[i]))
                start += self.sizes[i]
        self.float_rows = [g for g, dtype in enumerate(self.groups) if dtype.kind == "f"]
        # Where the action mask lies in the rows, if there is one.
        self._mask_leaf = self.keys.index(MASK_KEY) if structure == "dict" and MASK_KEY in self.keys else None
        self.masked = self._mask_leaf is not None

    @classmethod
    def for_space(cls, space: gym.Space, network=None) -> ObservationCodec:
        """The codec of an observation space (see `leaves_of`), for `network`'s input dtypes when given
        (else float32, int32 for a Discrete leaf)."""
        kind = next((kind for t, kind in _KINDS.items() if isinstance(space, t)), "array")
        inputs = None
        if network is not None:
            try:
                inputs = dict(_network_inputs(network)[0])
            except (AttributeError, ValueError):  # a model with no symbolic inputs: float32 it is
                pass
        leaves = []
        for key, leaf in leaves_of(space):
            integer = isinstance(leaf, gym.spaces.Discrete)
            if inputs is not None and key in inputs:
                input_dtype = inputs[key].dtype
            else:
                input_dtype = tf.int32 if integer else tf.float32
            storage = np.int32 if integer else storage_dtype(leaf.dtype)  # a Discrete index as int32
            leaves.append((key, () if integer else tuple(leaf.shape), integer, storage, input_dtype))
        return cls(leaves, kind)

    @classmethod
    def for_network(cls, network) -> ObservationCodec:
        """The codec of a Keras model's inputs: one input, a dict of inputs or a list of inputs (an integer
        input of shape [B] is a Discrete leaf, stored int32; a float input is stored float32, a bool one
        uint8, any other in its dtype)."""
        items, kind = _network_inputs(network)
        leaves = []
        for key, tensor in items:
            dtype = tf.as_dtype(tensor.dtype)
            integer = dtype.is_integer and len(tensor.shape) == 1
            leaves.append((key, tuple(tensor.shape[1:]), integer, storage_dtype(dtype.as_numpy_dtype), dtype))
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

    def rows(self, observations: Any) -> tuple[np.ndarray, ...]:
        """A batch of observations (an array [B, *shape], or a dict / tuple of such arrays) -> rows: one
        array [B, F_g] per storage dtype (`groups`)."""
        parts = self.parts(observations)
        if len(parts) == 1:  # the hot path of a Box observation: a view, cast only when needed
            part = np.asarray(parts[0])
            return (part.reshape(part.shape[0], -1).astype(self.groups[0], copy=False),)
        flat = [np.asarray(part).reshape(len(part), -1) for part in parts]
        return tuple(flat[members[0]].astype(dtype, copy=False) if len(members) == 1
                     else np.concatenate([flat[i] for i in members], axis=1, dtype=dtype, casting="unsafe")
                     for dtype, members in zip(self.groups, self._members, strict=True))

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
        return self.structure_numpy(self.rows(self.rebuild(parts))), single

    def structure(self, rows: Sequence[tf.Tensor]) -> Any:
        """Rows (one tensor [N, F_g] per storage dtype) -> the network's input: a tensor, dict or tuple of
        leaves [N, *leaf_shape] (a Discrete leaf [N]), each in the dtype of the network's input for it."""
        leaves = []
        for (g, columns), shape, integer, dtype in zip(self._where, self.shapes, self.integer, self.input_dtypes,
                                                       strict=True):
            part = rows[g] if len(self.keys) == 1 else rows[g][:, columns]
            leaves.append(tf.cast(part[:, 0], dtype) if integer else tf.reshape(tf.cast(part, dtype), [-1, *shape]))
        return self.rebuild(leaves)

    def structure_numpy(self, rows: Sequence[np.ndarray]) -> Any:
        """The numpy twin of `structure`."""
        dtypes = [dtype.as_numpy_dtype for dtype in self.input_dtypes]
        if len(self.keys) == 1 and not self.integer[0]:  # the hot path of a Box observation
            return rows[0].reshape(-1, *self.shapes[0]).astype(dtypes[0], copy=False)
        return self.rebuild([rows[g][:, columns][:, 0].astype(dtype) if integer
                             else rows[g][:, columns].reshape(-1, *shape).astype(dtype, copy=False)
                             for (g, columns), shape, integer, dtype in zip(self._where, self.shapes, self.integer,
                                                                            dtypes, strict=True)])

    def mask(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """The action mask [B, P] in `rows` (only when `masked`)."""
        g, columns = self._where[self._mask_leaf]
        return rows[g][:, columns]

    @property
    def row_layout(self) -> list[tuple[int, np.dtype]]:
        """(F_g, dtype) of each row, as `keras_a3c.segment.SegmentLayout` takes them."""
        return list(zip(self.group_sizes, self.groups, strict=True))

    def row_specs(self, batch: int | None = None) -> list[tf.TensorSpec]:
        """`tf.TensorSpec`s of rows [batch, F_g], one per storage dtype."""
        return [tf.TensorSpec([batch, size], dtype) for size, dtype in self.row_layout]

    def specs(self, batch: int | None = None) -> Any:
        """`tf.TensorSpec`s of the network's input in its structure, each named: "observations" for one
        input, its key for a dict entry, "observations_<i>" for a tuple entry."""
        names = ["observations" if key is None else key if self.structure_kind == "dict" else f"observations_{key}"
                 for key in self.keys]
        return self.rebuild([tf.TensorSpec([batch, *shape], dtype, name=str(name))
                             for name, shape, dtype in zip(names, self.shapes, self.input_dtypes, strict=True)])

    def zeros(self, batch: int) -> Any:
        """A batch of all-zero observations in the network's structure."""
        return self.structure_numpy([np.zeros((batch, size), dtype) for size, dtype in self.row_layout])
