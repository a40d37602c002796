"""Using a trained model: load the train stage's file and predict class probabilities.

Kept apart from digitlab/training/model.py and digitlab/training/fitting.py (dependencies of train) so
that a change to how we predict re-runs evaluate and sample_predict, not training.

Keras is imported only by `load_model`: the ONNX path (OnnxModel, predict_probabilities) is what
digitlab/serving runs, and it must never import TensorFlow (seconds and 600 MB; benchmarks/README.md,
"Using the model without TensorFlow").
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitlab.shared.errors import PipelineError
from digitlab.shared.views import VIEWS

if TYPE_CHECKING:
    import keras


def load_model(path: str | Path) -> keras.Model:
    """Load a model written by the train stage; safe mode refuses embedded Python code."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"model file {path} not found; run `dvc repro train` to train it")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError) as error:
        raise PipelineError(
            f"{path} is not a readable Keras model ({type(error).__name__}); run `dvc repro --force train`"
        ) from error


class OnnxModel:
    """The train stage's model.onnx run by onnxruntime on the CPU: called on a batch of images
    (N, 28, 28, 1) float32, it returns their class probabilities (N, 10)."""

    def __init__(self, path: Path):
        import onnxruntime  # only the stages that read model.onnx pay for importing it

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def load_onnx_model(path: str | Path) -> OnnxModel:
    """Load the model.onnx written by the train stage beside model.keras."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"model file {path} not found; run `dvc repro train` to export it")
    try:
        return OnnxModel(path)
    except Exception as error:  # onnxruntime raises its own exception types, not exported by name
        raise PipelineError(
            f"{path} is not a readable ONNX model ({type(error).__name__}); run `dvc repro --force train`"
        ) from error


def shifted(images: np.ndarray, down: int, right: int) -> np.ndarray:
    """`images` (N, H, W, C) moved by whole pixels, the background (0) coming in at the edges."""
    if not (down or right):
        return images
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return padded[:, 1 - down:1 - down + height, 1 - right:1 - right + width]


def predict_probabilities(model: keras.Model | Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                          batch_size: int, views: int = 1) -> np.ndarray:
    """Class probabilities of `images`, averaged over `views` (1, 5 or 9, see VIEWS), one call per batch:
    a Keras model's `predict_on_batch`, or `model` itself if it is a function from a batch of images to
    their probabilities (an OnnxModel), so that both are batched and shifted the same way.

    Not `model.predict`: timed over the test set, it now and then fell into a mode twice as slow,
    whatever the batch size; this loop gives the same probabilities to the bit and never did
    (benchmarks/README.md, "Inference").
    """
    predict = getattr(model, "predict_on_batch", model)  # a Keras model, or a function such as OnnxModel

    def probabilities(batch: np.ndarray) -> np.ndarray:
        # All the views of a batch in one call: fewer, larger calls are faster on a CPU.
        every_view = np.concatenate([shifted(batch, down, right) for down, right in VIEWS[views]])
        return np.asarray(predict(every_view)).reshape(views, len(batch), -1).mean(axis=0)

    return np.concatenate([probabilities(images[start:start + batch_size])
                           for start in range(0, len(images), batch_size)])


# How far the ONNX model's probabilities may stray from the Keras model's on the same images: float32
# arithmetic done in another order (onnxruntime's kernels, tf2onnx's folded constants) moves them by
# about 1e-7; a wrong export (other weights, a layer lost) moves them by far more, and changes answers.
PARITY_TOLERANCE = 1e-4


def parity(onnx_probabilities: np.ndarray, keras_probabilities: np.ndarray) -> dict:
    """How the ONNX model agrees with the Keras model it was exported from, on the same images:
    the share of identical answers (argmax) and the largest difference of any probability. Raises a
    PipelineError if any answer differs or a probability differs by more than PARITY_TOLERANCE."""
    agreement = float((onnx_probabilities.argmax(axis=1) == keras_probabilities.argmax(axis=1)).mean())
    difference = float(np.abs(onnx_probabilities - keras_probabilities).max())
    if agreement < 1 or not difference <= PARITY_TOLERANCE:
        raise PipelineError(
            f"model.onnx is not the Keras model: they agree on {agreement:.2%} of the answers (argmax_agreement "
            f"{agreement:.6f}, must be 1) and probabilities differ by up to {difference:.3g} (max_probability_"
            f"difference, at most {PARITY_TOLERANCE:g}); run `dvc repro --force train` to export both again"
        )
    return {"argmax_agreement": round(agreement, 6), "max_probability_difference": float(f"{difference:.3g}")}
