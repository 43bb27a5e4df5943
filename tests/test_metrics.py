"""RunningMeans: the one metric that keeps what every update logs."""

import threading
import time

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
    np.testing.assert_array_equal(np.asarray(clone.sums), [0.0, 0.0, 0.0])


def test_running_means_stay_means_while_threads_update_and_the_main_thread_resets():
    # The trainer resets the metric at each epoch end while the workers' compiled updates write to it.
    # Every update logs the same values, so any mean read must be exactly those values (or 0 after a reset).
    metric = RunningMeans(("loss", "entropy"))
    update = tf.function(lambda: metric.update_state({"loss": tf.constant(1.0), "entropy": tf.constant(0.5)}))
    update()
    stop, lock = threading.Event(), threading.Lock()

    def work():
        while not stop.is_set():
            with lock:  # the learner's lock: updates are serialised, resets and reads are not
                update()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    seen = set()
    try:
        for _ in range(1500):
            metric.reset_state()
            time.sleep(0.0005)
            result = metric.result()
            seen.add((float(result["loss"]), float(result["entropy"])))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert seen <= {(1.0, 0.5), (0.0, 0.0)}, sorted(seen)
