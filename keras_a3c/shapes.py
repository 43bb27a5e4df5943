"""Shape checks for the losses and distributions: a rank mistake such as multiplying a `[N, 1]`
advantage by a `[N]` log-probability silently broadcasts to `[N, N]` in TensorFlow, so it is
rejected, with the tensor's name, when the graph is built."""

from __future__ import annotations

import tensorflow as tf


def check_rank(x: tf.Tensor, rank: int, name: str) -> None:
    if tf.TensorShape(x.shape).rank != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {x.shape}")


def check_same_shape(a: tf.Tensor, b: tf.Tensor, names: str) -> None:
    if not tf.TensorShape(a.shape).is_compatible_with(tf.TensorShape(b.shape)):
        raise ValueError(f"{names} must have the same shape, got {a.shape} and {b.shape}")
