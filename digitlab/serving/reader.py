"""Reading digits from your own images: load the trained model once, then predict many images.

    from digitlab.serving.reader import DigitReader
    reader = DigitReader()                       # data/model/model.onnx, or DigitReader("other.onnx")
    reader.predict(["photo.jpg", pil_image, array])
    -> [{"path": "photo.jpg", "digit": 7, "confidence": 0.998, "runner_up": 1,
         "probabilities": [...10 floats...], "error": None}, ...]

Each image is put in the MNIST look (digitlab.images.mnist_look), then given to the model in batches. One
that cannot be read or holds no digit gets `digit: None` and an `error` that says why, never a guess; one
below the threshold model.onnx carries (digitlab/inference/rejection.py) gets `error: "not a digit"`, its
confidence and probabilities still given, unless `accept_all=True`. The model is the model.onnx that the
train stage writes beside model.keras, after checking that it answers the validation images as model.keras
does; onnxruntime runs it, so nothing here imports TensorFlow (docs/using-the-model.md).
"""

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from digitlab.shared.errors import UserError
from digitlab.shared.tta import DEFAULT_VIEWS, VIEWS

import numpy as np

from digitlab.images.mnist_look import prepare_or_why, to_model_input
from digitlab.inference.onnx_model import load_onnx_model
from digitlab.inference.rejection import NOT_A_DIGIT, rejected
from digitlab.inference.rounding import probability
from digitlab.inference.views import PREDICT_BATCH, predict_probabilities

DEFAULT_MODEL = Path("data/model/model.onnx")
# Fewer images are prepared in this process: starting the worker processes would cost more than it saves
# (benchmarks/README.md, "Using the model on your own digits").
PARALLEL_FROM = 64


@dataclass
class Reading:
    """What the model read in one image, and the 28x28 image it saw (None where it saw none)."""

    path: str | None
    digit: int | None = None
    confidence: float | None = None
    runner_up: int | None = None
    probabilities: list[float] | None = None
    error: str | None = None
    image: np.ndarray | None = None

    def to_dict(self) -> dict:
        """The JSON fields: everything but the image."""
        return {
            "path": self.path,
            "digit": self.digit,
            "confidence": self.confidence,
            "runner_up": self.runner_up,
            "probabilities": self.probabilities,
            "error": self.error,
        }


def keras_file_error(path: Path) -> UserError:
    """The one-line answer to a .keras file given where the ONNX model is read."""
    onnx = path.with_suffix(".onnx")
    return UserError(
        f"{path} is a Keras model; digits are read with the ONNX model the train stage writes beside it: "
        f"give {onnx} (`dvc repro train` writes it, `dvc artifacts get <repository URL> mnist-cnn-onnx` downloads it)"
    )


class DigitReader:
    """A trained model (the train stage's model.onnx), loaded once, that reads digits from images."""

    def __init__(
        self,
        model_path: str | Path = DEFAULT_MODEL,
        batch_size: int = PREDICT_BATCH,
        views: int = DEFAULT_VIEWS,
        accept_all: bool = False,
    ):
        if views not in VIEWS:  # now, not as a KeyError at the first image
            raise ValueError(
                f"views={views!r}: test-time augmentation takes "
                f"{', '.join(map(str, sorted(VIEWS)[:-1]))} or {sorted(VIEWS)[-1]} views"
            )
        model_path = Path(model_path)
        if model_path.suffix.lower() == ".keras":
            raise keras_file_error(model_path)
        self.model = load_onnx_model(model_path)
        self.batch_size = batch_size
        self.views = views  # test-time augmentation, as evaluate.tta_views
        # Below this confidence an image is "not a digit"; None (accept_all, or a model trained without
        # thresholds) gives every image a digit.
        self.threshold = None if accept_all else self.model.thresholds.get(views)
        self.workers = None

    def _workers(self) -> ProcessPoolExecutor:
        """Processes that decode and prepare images, one per core, started on first need. Spawned, not
        forked: a fork of a process running onnxruntime's threads is unsafe."""
        if self.workers is None:
            self.workers = ProcessPoolExecutor(
                os.cpu_count(),
                mp_context=multiprocessing.get_context("spawn"),
                # Ctrl-C reaches the whole process group: let this process stop the work, quietly.
                initializer=signal.signal,
                initargs=(signal.SIGINT, signal.SIG_IGN),
            )
        return self.workers

    def close(self) -> None:
        """Stop the worker processes, if any started, dropping work not yet begun. Python can report
        a spurious 'Bad file descriptor' if a pool is left to its exit handler while work is pending."""
        if self.workers is not None:
            self.workers.shutdown(cancel_futures=True)
            self.workers = None

    def __enter__(self) -> "DigitReader":
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def read(self, images: list, paths: list[str | None] | None = None) -> list[Reading]:
        """One Reading per image (a path, bytes, a PIL image or an array), in order."""
        return self.classify(self.prepare(images, paths))

    def prepare(self, images: list, paths: list[str | None] | None = None) -> list[Reading]:
        """The first half of `read`: each image in the MNIST look (Reading.image), or why it has none."""
        paths = paths or [str(image) if isinstance(image, (str, Path)) else None for image in images]
        if len(images) >= PARALLEL_FROM:
            prepared = list(self._workers().map(prepare_or_why, images, chunksize=32))
        else:
            prepared = [prepare_or_why(image) for image in images]
        return [Reading(path, image=digit, error=why) for path, (digit, why) in zip(paths, prepared)]

    def classify(self, readings: list[Reading]) -> list[Reading]:
        """The second half of `read`: the model's answer for every prepared image, in one call per batch."""
        seen = [reading for reading in readings if reading.image is not None]
        if seen:
            batch = to_model_input(np.stack([reading.image for reading in seen]))
            for reading, probabilities in zip(
                seen, predict_probabilities(self.model, batch, self.batch_size, self.views)
            ):
                runner_up, digit = np.argsort(probabilities)[-2:]
                reading.confidence = probability(probabilities[digit])
                reading.probabilities = [probability(p) for p in probabilities]
                if self.threshold is not None and rejected(probabilities[digit], self.threshold):
                    reading.error = NOT_A_DIGIT
                else:
                    reading.digit, reading.runner_up = int(digit), int(runner_up)
        return readings

    def predict(self, images: list) -> list[dict]:
        """The JSON fields of `read`: path, digit (None if none), confidence, runner_up, probabilities, error."""
        return [reading.to_dict() for reading in self.read(images)]
