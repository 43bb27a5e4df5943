import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Ray 2.60 turns token authentication on for the local clusters the Ray tests start; they run without it.
os.environ["RAY_AUTH_MODE"] = "disabled"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
