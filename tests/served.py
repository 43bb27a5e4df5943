"""Serve an exported policy in another Python process that never imports keras_a3c (a SavedModel's
`serve` signature through TensorFlow alone, an ONNX model through onnxruntime alone), or a TFLite file
through the TFLite interpreter."""

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import tensorflow as tf

SERVE = """
import json, sys
import numpy as np

def serve(path, feed):
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
    return {"actions": actions.tolist(), "dtype": actions.dtype.name, "inputs": sorted(inputs),
            "state": next((outputs[k].tolist() for k in ("state", "new_state") if k in outputs), None),
            "imported": sorted(m for m in ("tensorflow", "keras_a3c") if m in sys.modules)}

if len(sys.argv) > 1:  # one policy, then exit
    print(json.dumps(serve(sys.argv[1], json.loads(sys.argv[2]))))
else:  # a server: a request {"path", "feed"} a line on stdin, its answer a line on stdout
    import traceback
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = serve(request["path"], request["feed"])
        except Exception:
            answer = {"error": traceback.format_exc()}
        print(json.dumps(answer), flush=True)
"""
TIMEOUT = 120
_server: subprocess.Popen | None = None


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _saved_model_server() -> subprocess.Popen:
    """This test process's SavedModel server, started when first asked for: a process of its own that loads
    each SavedModel it is sent through TensorFlow alone (importing TensorFlow once, not once a policy)."""
    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen([sys.executable, "-c", SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True, env=_environment(), cwd=tempfile.gettempdir())
        atexit.register(_server.kill)
    return _server


def serve_without_keras_a3c(path, feed: dict[str, np.ndarray]) -> dict:
    """{"actions": the policy's actions for `feed` (inputs by name, cast to the dtypes the model
    declares), "state": a recurrent policy's new state (else None), "inputs": the model's input names,
    "imported": which of tensorflow and keras_a3c the serving process has imported}. An ONNX model is
    served in a fresh process (so "imported" shows it needs neither), a SavedModel by the SavedModel server."""
    path, feed = str(path), {k: np.asarray(v).tolist() for k, v in feed.items()}
    if path.endswith(".onnx"):
        out = subprocess.run([sys.executable, "-c", SERVE, path, json.dumps(feed)], capture_output=True, text=True,
                             check=True, env=_environment(), cwd=os.path.dirname(path), timeout=TIMEOUT)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    else:
        server = _saved_model_server()
        server.stdin.write(json.dumps({"path": path, "feed": feed}) + "\n")
        server.stdin.flush()
        if not select.select([server.stdout], [], [], TIMEOUT)[0]:
            server.kill()
            raise TimeoutError(f"the SavedModel server did not answer within {TIMEOUT} s")
        line = server.stdout.readline()
        if not line:
            raise RuntimeError(f"the SavedModel server exited with {server.wait()}")
        result = json.loads(line)
        assert "error" not in result, result["error"]
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
