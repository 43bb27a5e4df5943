"""Export the policy as a TF SavedModel that loads without keras_a3c (or Keras) installed.

Endpoints, all taking float32 observations [batch, *obs_shape]:
  serve(observations) -> the deterministic action:
      Discrete: int64 [batch], the greedy action argmax_a pi(a|s);
      Box((D,)): float32 [batch, D], the Gaussian mean clipped to the bounds.
  action_distribution(observations) -> float32 logits [batch, num_actions] (Discrete),
      or concat(mean, log_std) [batch, 2D] with the log std clamped as in training (Box)
  value(observations) -> float32 V(s) [batch]
`serving_default` is `serve`, for TF Serving.

    policy = tf.saved_model.load(path)
    actions = policy.serve(tf.constant(observations, tf.float32))
"""

from __future__ import annotations

import os
import shutil
import tempfile

import gymnasium as gym
import keras
import tensorflow as tf

from keras_a3c.distributions import DiagGaussian, for_action_space


def export_policy(network: keras.Model, path: str | os.PathLike, action_space: gym.Space | None = None) -> None:
    """Write `network`'s policy to `path` as a SavedModel.

    `action_space` says how to read the network's policy params; None reads them as logits.
    The SavedModel is written beside `path` and renamed into place, so a failed
    export leaves nothing behind. An existing `path` is an error, never overwritten.
    """
    gaussian = action_space is not None and for_action_space(action_space) is DiagGaussian
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

    def params_and_value(observations):
        params, value = network(observations, training=False)
        return params, tf.reshape(value, [-1])

    if gaussian:
        low = tf.constant(action_space.low, tf.float32)
        high = tf.constant(action_space.high, tf.float32)

        def serve(obs):
            return tf.clip_by_value(DiagGaussian.from_params(params_and_value(obs)[0]).mode(), low, high)

        def action_distribution(obs):
            pi = DiagGaussian.from_params(params_and_value(obs)[0])
            return tf.concat([pi.mean, pi.log_std], axis=1)
    else:

        def serve(obs):
            return tf.argmax(params_and_value(obs)[0], axis=1)

        def action_distribution(obs):
            return params_and_value(obs)[0]

    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint("serve", serve, [obs_spec])
    archive.add_endpoint("action_distribution", action_distribution, [obs_spec])
    archive.add_endpoint("value", lambda obs: params_and_value(obs)[1], [obs_spec])
    try:
        target = os.path.join(staging, "saved_model")
        archive.write_out(target, verbose=False)
        os.rename(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
