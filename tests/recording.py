"""Record the segments workers hand to the compiled update during `fit`."""

import numpy as np

from keras_a3c.learner import Learner


def record_segments(monkeypatch) -> list[list[np.ndarray]]:
    """From now on, a copy of every segment (the arrays of `SegmentLayout.empty`) a worker updates with is
    appended to the returned list."""
    segments: list[list[np.ndarray]] = []
    compile_update = Learner.compile

    def recording_compile(self, *args, **kwargs):
        train = compile_update(self, *args, **kwargs)

        def record(segment):
            segments.append([np.array(part) for part in segment])
            return train(segment)

        return record

    monkeypatch.setattr(Learner, "compile", recording_compile)
    return segments
