"""Export the policy as a TF SavedModel (or a TFLite flat buffer, or an ONNX model) that needs no keras_a3c.

SavedModel endpoints. Each is a `tf.function` attribute of the loaded object, which returns a
tensor, and a signature of the same name (what TF Serving and `saved_model_cli` call), which
returns a dict holding that tensor under the output key given in [brackets]:
  serve(observations) -> [actions] the deterministic action:
      Discrete(A): int64 [batch], the greedy action argmax_a pi(a|s);
      Box((D,)):   float32 [batch, D], the Gaussian mean clipped to the bounds;
      MultiDiscrete(nvec): int64 [batch, K], the greedy action of each part;
      MultiBinary(n): int64 [batch, n], each bit 1 where its probability is above 1/2.
  sample(observations, seed) -> [actions] an action sampled from pi(.|s), same dtype and shape as
      `serve` (Box samples clipped to the bounds, as the env sees them). Stateless: the same seed
      and the same observation batch give the same actions (the seed of the stateless op is [seed, 0]).
  action_distribution(observations) -> Discrete, MultiDiscrete, MultiBinary: [logits] float32 [batch, A],
      [batch, sum(nvec)] (the parts side by side), [batch, n];
      Box: [mean_and_log_std] float32 [batch, 2D], concat(mean, log_std) with the log std clamped as in training.
  value(observations) -> [value] float32 V(s) [batch].
Inputs: `observations` [batch, *obs_shape] (any batch size) in the dtype of the network's input: float32,
or the env's own dtype for `actor_critic_cnn` (e.g. uint8; the signatures declare it, and the endpoint
functions also take float32 with the same values); `seed` an int64 scalar.
The `serving_default` signature is `serve`, for TF Serving.

    policy = tf.saved_model.load(path)
    actions = policy.serve(tf.constant(observations, tf.float32))
    sampled = policy.sample(tf.constant(observations, tf.float32), tf.constant(7, tf.int64))
    actions = policy.signatures["serve"](observations=tf.constant(observations, tf.float32))["actions"]

A recurrent network (see `keras_a3c.recurrent`) carries its state explicitly: each endpoint takes
`state`, float32 [batch, S] (the state parts side by side), after the observations (before `seed`),
and returns (its output, the new state); each signature returns {its key, "state"}. One more endpoint
and signature, `initial_state(batch_size) -> [state]` (an int32 scalar in, zeros [batch_size, S] out),
begins an episode:

    state = policy.initial_state(tf.constant(1, tf.int32))
    actions, state = policy.serve(observations, state)

The TFLite export holds `serve` alone, as the signature "serve" (input `observations`, output `actions`;
a recurrent policy also `state` in and out).
Its input tensor has shape [1, *obs_shape] until resized: `interpreter.resize_tensor_input`.

The ONNX export (`format="onnx"`; needs the optional tf2onnx, `pip install tf2onnx onnxruntime`) is
one graph of the deterministic endpoints, opset ONNX_OPSET: input `observations` float32
[batch, *obs_shape] (and `state`, for a recurrent policy), outputs `actions` (as `serve`), `logits` or
`mean_and_log_std` (as `action_distribution`), `value` (and `new_state`). Run it with onnxruntime,
no TensorFlow needed:

    onnx_policy = onnxruntime.InferenceSession("policy.onnx")
    actions = onnx_policy.run(["actions"], {"observations": observations})[0]
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from keras_a3c.distributions import Categorical, DiagGaussian, for_action_space, masked_params
from keras_a3c.files import write_atomically
from keras_a3c.observations import MASK_KEY, ObservationCodec
from keras_a3c.recurrent import state_sizes

FORMATS = ("saved_model", "tflite", "onnx")
ONNX_OPSET = 17


def export_policy(
    network: keras.Model, path: str | os.PathLike, action_space: gym.Space | None = None, format: str = "saved_model"
) -> None:
    """Write `network`'s policy to `path`: a SavedModel directory, or with `format="tflite"` a
    `.tflite` file holding the deterministic policy (`serve`), or with `format="onnx"` an ONNX model
    of the deterministic endpoints (see the module docstring).

    `action_space` says how to read the network's policy params; None reads them as logits.
    The export is written beside `path` and moved into place, so a failed export leaves
    nothing behind (not even the parent directories it created). An existing `path` is a
    `FileExistsError`, never overwritten; a `path` that cannot be written is an `OSError` naming it.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {', '.join(map(repr, FORMATS))}")
    if format == "onnx":
        try:
            import tf2onnx  # noqa: F401  (optional; checked before anything is written)
        except ImportError as exc:
            raise ImportError("ONNX export needs tf2onnx, an optional dependency: pip install tf2onnx onnxruntime "
                              "(or keras_a3c[onnx])") from exc

    def write(target: str) -> None:
        if format == "saved_model":
            _write_saved_model(network, target, action_space)
            return
        saved_model = target + ".saved_model"  # beside the target, in the staging directory
        _write_saved_model(network, saved_model, action_space)
        data = _tflite_flat_buffer(saved_model) if format == "tflite" else _onnx_model(saved_model)
        with open(target, "wb") as f:
            f.write(data)

    write_atomically(path, write, "export")


def _write_saved_model(network: keras.Model, path: str, action_space: gym.Space | None) -> None:
    """The endpoints and signatures of the module docstring, written to `path` with `tf.saved_model.save`.

    keras.export.ExportArchive would name every signature output "output_0" (each signature is
    its endpoint function); here the signatures wrap the endpoints to name their outputs.
    """
    codec = ObservationCodec.for_network(network)
    sizes = state_sizes(network)
    obs_spec = codec.specs()  # one spec, or a dict / tuple of them for a network with several inputs
    leaf_specs = codec.parts(obs_spec)
    # An input of another dtype than float32 (a uint8 image) is also taken as float32 by the endpoints.
    float_leaf_specs = [spec if integer or spec.dtype == tf.float32 else tf.TensorSpec(spec.shape, name=spec.name)
                        for spec, integer in zip(leaf_specs, codec.integer, strict=True)]
    traced = [leaf_specs] + ([float_leaf_specs] if float_leaf_specs != leaf_specs else [])
    seed_spec = tf.TensorSpec((), tf.int64, name="seed")
    # A recurrent network's state, its parts side by side (see keras_a3c.recurrent).
    state_specs = [tf.TensorSpec([None, sum(sizes)], tf.float32, name="state")] if sizes else []

    def outputs(observations, *state) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        """(policy params, value [batch], the new state: [state [batch, S]] or [])."""
        observations = codec.rebuild([tf.cast(leaf, spec.dtype) for leaf, spec in
                                      zip(codec.parts(observations), leaf_specs, strict=True)])
        if sizes:
            params, value, *new_state = network([observations, *tf.split(state[0], sizes, axis=1)], training=False)
            new_state = [tf.concat(new_state, axis=1)]
        else:
            (params, value), new_state = network(observations, training=False), []
        if codec.masked:  # the policy only takes the actions the mask allows
            params = masked_params(params, observations[MASK_KEY])
        return params, tf.reshape(value, [-1]), new_state

    def stateless_seed(seed: tf.Tensor) -> tf.Tensor:
        return tf.stack([seed, tf.zeros_like(seed)])

    # What each endpoint makes of (params, value[, seed]).
    if action_space is not None and for_action_space(action_space) is DiagGaussian:
        # numpy, so each traced function holds the bounds as its own constants (a captured tensor
        # would become an extra graph input in the ONNX conversion).
        low, high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)

        def serve(params, value):
            return tf.clip_by_value(DiagGaussian.from_params(params).mode(), low, high)

        def sample(params, value, seed):
            return tf.clip_by_value(DiagGaussian.from_params(params).sample(stateless_seed(seed)), low, high)

        def action_distribution(params, value):
            pi = DiagGaussian.from_params(params)
            return tf.concat([pi.mean, pi.log_std], axis=1)

        distribution_key = "mean_and_log_std"
    else:
        family = Categorical if action_space is None else for_action_space(action_space)

        def serve(params, value):
            return tf.cast(family.from_params(params).mode(), tf.int64)

        def sample(params, value, seed):
            return tf.cast(family.from_params(params).sample(stateless_seed(seed)), tf.int64)

        def action_distribution(params, value):
            return params

        distribution_key = "logits"

    def value_of(params, value):
        return value

    heads: dict[str, tuple[Callable[..., tf.Tensor], list[tf.TensorSpec], str]] = {
        "serve": (serve, [], "actions"),
        "sample": (sample, [seed_spec], "actions"),
        "action_distribution": (action_distribution, [], distribution_key),
        "value": (value_of, [], "value"),
    }
    module = tf.Module()
    signatures = {}
    variables = {}
    leaves = len(leaf_specs)
    def endpoint_of(head: Callable[..., tf.Tensor]) -> Callable[..., tf.Tensor | tuple[tf.Tensor, tf.Tensor]]:
        """observations[, state], *extra -> the head's output[, the new state]."""
        def endpoint(observations, *extra):
            params, value, new_state = outputs(observations, *extra[:len(state_specs)])
            result = head(params, value, *extra[len(state_specs):])
            return (result, *new_state) if sizes else result

        return endpoint

    for name, (head, extra_specs, key) in heads.items():
        extra_specs = state_specs + extra_specs  # a recurrent endpoint takes the state after the observations
        endpoint = tf.function(endpoint_of(head), autograph=False)
        for specs in traced:
            endpoint.get_concrete_function(codec.rebuild(specs), *extra_specs)  # the traces saved
        setattr(module, name, endpoint)

        # A signature takes flat named tensors: one per observation entry, then the state, then the seed.
        def signature_fn(*args, endpoint=endpoint, key=key):
            result = endpoint(codec.rebuild(args[:leaves]), *args[leaves:])
            return {key: result[0], "state": result[1]} if sizes else {key: result}

        signatures[name] = tf.function(signature_fn, input_signature=[*leaf_specs, *extra_specs], autograph=False)
        variables.update((id(v), v) for v in endpoint.get_concrete_function(obs_spec, *extra_specs).variables)
    if sizes:
        width, batch_size_spec = sum(sizes), [tf.TensorSpec((), tf.int32, name="batch_size")]
        module.initial_state = tf.function(lambda batch_size: tf.zeros(tf.stack([batch_size, width]), tf.float32),
                                           input_signature=batch_size_spec, autograph=False)
        signatures["initial_state"] = tf.function(lambda batch_size: {"state": module.initial_state(batch_size)},
                                                  input_signature=batch_size_spec, autograph=False)
    signatures["serving_default"] = signatures["serve"]
    # Save the tf.Variables the endpoints read (as keras.export does), not the Keras wrappers:
    # with those, the TF1 session of `saved_model_cli run` cannot find the variables.
    module.policy_variables = list(variables.values())
    tf.saved_model.save(module, path, signatures=signatures)


def _tflite_flat_buffer(saved_model: str) -> bytes:
    """The `serve` signature of a SavedModel converted to a TFLite flat buffer."""
    return tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serve"]).convert()


def _onnx_model(saved_model: str) -> bytes:
    """The deterministic endpoints of a SavedModel (serve, action_distribution, value) as one ONNX graph."""
    import tf2onnx

    policy = tf.saved_model.load(saved_model)
    signature_specs = policy.signatures["serve"].structured_input_signature[1]  # {input name: spec}
    names = sorted(signature_specs, key=lambda name: name == "state")  # a recurrent state after the observations
    spec = tuple(tf.TensorSpec(signature_specs[name].shape, signature_specs[name].dtype, name=name) for name in names)
    outputs = policy.signatures["action_distribution"].structured_outputs  # {key: spec}, in no fixed order
    distribution_key = next(key for key in outputs if key != "state")

    def endpoints(*inputs):  # a dict, so the ONNX outputs carry these names
        named = dict(zip(names, inputs, strict=True))
        served = policy.signatures["serve"](**named)
        return {"actions": served["actions"],
                distribution_key: policy.signatures["action_distribution"](**named)[distribution_key],
                "value": policy.signatures["value"](**named)["value"],
                # An ONNX output may not share its input's name.
                **({"new_state": served["state"]} if "state" in served else {})}

    model, _ = tf2onnx.convert.from_function(tf.function(endpoints, input_signature=spec), input_signature=spec,
                                             opset=ONNX_OPSET)
    return model.SerializeToString()
