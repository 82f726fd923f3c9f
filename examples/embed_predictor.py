"""Embed a fusionedge model in an application: inputs from the app's own producer, a
callback per result, bad inputs reported without stopping, a clean close.

    python examples/embed_predictor.py MODEL FOLDER

MODEL is an exported model (model.onnx, or a model.split folder). FOLDER holds the inputs
as files that share a name: x.png (or .jpg) + x.wav (or .flac) + x.txt make one sample,
and any of them may be missing. Each result is printed as one JSON line: {"id", "label",
"score", "present", "ms"}, or {"id", "error"} for an input the model cannot use.

No torch here: fusionedge.runtime needs numpy, OpenCV, soundfile and ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fusionedge.runtime import Predictor, Result

# File suffix -> the predict() argument it feeds.
KINDS = {".png": "image", ".jpg": "image", ".wav": "audio", ".flac": "audio", ".txt": "text"}
OnResult = Callable[[str, Result], Any]
OnError = Callable[[str, ValueError], Any]


class Classifier:
    """Owns a Predictor and one worker thread that runs it.

    submit() may be called from any thread; on_result(id, Result) and on_error(id,
    ValueError) are called on the worker thread, in submission order, so keep them short
    (hand off to your UI's own queue if it has one). The Predictor's docs promise nothing
    about concurrent calls, so only the worker ever calls it, and close() ends the worker
    before it closes the Predictor: no prediction can race with the close.
    """

    def __init__(self, model: str | Path, on_result: OnResult, on_error: OnError) -> None:
        # A model file that cannot be used fails here, before any thread starts:
        # FileNotFoundError, or ModelFileError (a ValueError) saying what is wrong.
        # threads=1, spinning=False: the app's own threads (camera, audio, UI) keep their
        # cores; ONNX Runtime's default is one spinning thread per core, made for batch work.
        self.predictor = Predictor.from_path(model, threads=1, spinning=False)
        self.on_result, self.on_error = on_result, on_error
        # Bounded: a producer faster than the model waits in submit() instead of piling up
        # memory. A live app would rather drop old inputs (fusionedge run keeps the newest).
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._worker = threading.Thread(target=self._work, name="classifier", daemon=True)
        self._worker.start()

    def submit(self, sample_id: str, **inputs: Any) -> None:
        """Queues one sample: image=, audio=, text= (any subset), as Predictor.predict takes
        them: file paths, or arrays (image=frame, color_order="bgr" for OpenCV; audio=pcm,
        sample_rate=48000). Do not write into an array after handing it over."""
        while self._worker.is_alive():  # (a dead worker would leave a full queue full)
            try:
                return self._queue.put((sample_id, inputs), timeout=0.1)
            except queue.Full:
                pass
        raise RuntimeError("the classifier is closed, or a callback raised")

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            sample_id, inputs = job
            try:
                result = self.predictor.predict(**inputs)
            except ValueError as e:
                # Everything an input can cause is a ValueError with a clear message:
                # MediaError (a file that does not decode, an image of 0-255 floats),
                # NonFiniteError (the model gave NaN), a wrong shape or sample rate. It
                # concerns this sample only; the next one is predicted as usual.
                self.on_error(sample_id, e)
                continue
            self.on_result(sample_id, result)  # an exception here ends the worker

    def close(self) -> None:
        """Predicts what is queued, then stops the worker and releases the model."""
        if self._worker.is_alive():
            self._queue.put(None)
        self._worker.join()
        self.predictor.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def samples_in(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """The app's producer: (id, inputs) per file name in the folder, in name order."""
    samples: dict[str, dict[str, Any]] = {}
    for f in sorted(folder.iterdir()):
        if (kind := KINDS.get(f.suffix.lower())) is not None:
            value = f.read_text(encoding="utf-8") if kind == "text" else f
            samples.setdefault(f.stem, {})[kind] = value
    return list(samples.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model.onnx or a model.split folder")
    parser.add_argument("folder", type=Path, help="input files: NAME.png, NAME.wav, NAME.txt")
    args = parser.parse_args()

    def on_result(sample_id: str, r: Result) -> None:
        present = [m for m, here in r.present.items() if here]
        score, ms = round(r.top_k[0][1], 4), round(r.latency_ms["total"], 2)
        line = {"id": sample_id, "label": r.label, "score": score, "present": present}
        print(json.dumps({**line, "ms": ms}), flush=True)

    def on_error(sample_id: str, error: ValueError) -> None:
        print(
            json.dumps({"id": sample_id, "error": f"{type(error).__name__}: {error}"}), flush=True
        )

    with Classifier(args.model, on_result, on_error) as classifier:

        def produce() -> None:  # in its own thread, as a camera or network reader would be
            for sample_id, inputs in samples_in(args.folder):
                classifier.submit(sample_id, **inputs)

        producer = threading.Thread(target=produce)
        producer.start()
        producer.join()
    # Leaving the with block waited for every queued sample and closed the model.


if __name__ == "__main__":
    main()
