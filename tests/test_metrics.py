"""RunningMeans: the one metric that keeps what every update logs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_a3c.metrics import RunningMeans


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_running_means_are_the_means_of_each_name_since_the_last_reset(compiled):
    metric = RunningMeans(("loss", "entropy"))
    update = tf.function(metric.update_state) if compiled else metric.update_state
    update({"loss": tf.constant(1.0), "entropy": tf.constant(0.5)})
    update({"loss": tf.constant(3.0), "entropy": tf.constant(0.25)})
    result = {name: float(value) for name, value in metric.result().items()}
    assert result == {"loss": 2.0, "entropy": 0.375}
    metric.reset_state()
    assert {name: float(value) for name, value in metric.result().items()} == {"loss": 0.0, "entropy": 0.0}


def test_running_means_name_a_missing_value():
    with pytest.raises(ValueError, match=r"needs a value for \['entropy'\]"):
        RunningMeans(("loss", "entropy")).update_state({"loss": 1.0})


def test_running_means_round_trip_their_config():
    metric = RunningMeans(("a", "b"), name="logs")
    clone = RunningMeans.from_config(metric.get_config())
    assert clone.names == ("a", "b") and clone.name == "logs"
    assert isinstance(clone, keras.metrics.Metric)
    np.testing.assert_array_equal(np.asarray(clone.totals), [0.0, 0.0])
