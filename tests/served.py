"""Serve an exported policy in a fresh Python process that never imports keras_a3c (a SavedModel's
`serve` signature through TensorFlow alone, an ONNX model through onnxruntime alone), or a TFLite file
through the TFLite interpreter."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import tensorflow as tf

SERVE = """
import json, sys
import numpy as np
path, feed = sys.argv[1], json.loads(sys.argv[2])
if path.endswith(".onnx"):
    import onnxruntime
    onnx_policy = onnxruntime.InferenceSession(path)
    types = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
    inputs = {i.name: np.array(feed[i.name], types[i.type]) for i in onnx_policy.get_inputs()}
    names = [o.name for o in onnx_policy.get_outputs()]
    outputs = dict(zip(names, onnx_policy.run(names, inputs)))
else:
    import tensorflow as tf
    serve = tf.saved_model.load(path).signatures["serve"]
    specs = serve.structured_input_signature[1]
    inputs = {name: tf.constant(np.array(feed[name]), spec.dtype) for name, spec in specs.items()}
    outputs = {name: value.numpy() for name, value in serve(**inputs).items()}
actions = outputs["actions"]
print(json.dumps({"actions": actions.tolist(), "dtype": actions.dtype.name, "inputs": sorted(inputs),
                  "state": next((outputs[k].tolist() for k in ("state", "new_state") if k in outputs), None),
                  "imported": sorted(m for m in ("tensorflow", "keras_a3c") if m in sys.modules)}))
"""


def serve_in_a_fresh_process(path, feed: dict[str, np.ndarray]) -> dict:
    """{"actions": the policy's actions for `feed` (inputs by name, cast to the dtypes the model
    declares), "state": a recurrent policy's new state (else None), "inputs": the model's input names,
    "imported": which of tensorflow and keras_a3c the process imported}."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", SERVE, str(path), json.dumps({k: np.asarray(v).tolist()
                                                                             for k, v in feed.items()})],
                         capture_output=True, text=True, check=True, env=env, cwd=os.path.dirname(str(path)),
                         timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["actions"] = np.array(result["actions"], result["dtype"])
    return result


def tflite_interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # tf.lite.Interpreter is deprecated but still in TF 2.21
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        return Interpreter(model_path=path)
