"""Export the policy as a TF SavedModel that loads without keras_a3c (or Keras) installed.

Endpoints, all taking float32 observations [batch, *obs_shape]:
  serve(observations) -> int64 actions [batch], the greedy action argmax_a pi(a|s)
  action_distribution(observations) -> float32 logits [batch, num_actions]
  value(observations) -> float32 V(s) [batch]
`serving_default` is `serve`, for TF Serving.

    policy = tf.saved_model.load(path)
    actions = policy.serve(tf.constant(observations, tf.float32))
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import tensorflow as tf


def export_policy(network: keras.Model, path: str | os.PathLike) -> None:
    """Write `network`'s policy to `path` as a SavedModel.

    The SavedModel is written beside `path` and renamed into place, so a failed
    export leaves nothing behind. An existing `path` is an error, never overwritten.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        raise FileExistsError(f"export path {path} already exists; choose a new path or remove it")
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    except OSError as exc:
        raise OSError(f"cannot write the export to {path}: {exc}") from exc

    obs_spec = keras.InputSpec(shape=(None, *network.inputs[0].shape[1:]), dtype="float32")

    def logits_and_value(observations):
        logits, value = network(observations, training=False)
        return logits, tf.reshape(value, [-1])

    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint("serve", lambda obs: tf.argmax(logits_and_value(obs)[0], axis=1), [obs_spec])
    archive.add_endpoint("action_distribution", lambda obs: logits_and_value(obs)[0], [obs_spec])
    archive.add_endpoint("value", lambda obs: logits_and_value(obs)[1], [obs_spec])
    try:
        target = os.path.join(staging, "saved_model")
        archive.write_out(target, verbose=False)
        os.rename(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
