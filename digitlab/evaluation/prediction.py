"""Using a trained model: load the train stage's file and predict class probabilities.

Kept apart from digitlab/training/model.py and digitlab/training/fitting.py (dependencies of train) so
that a change to how we predict re-runs evaluate and sample_predict, not training.

Predicting over the test-time views (`predict_probabilities`) is in digitlab/shared/views.py, as the
train stage also predicts, to choose its "not a digit" thresholds.

Keras is imported only by `load_model`: the ONNX path (OnnxModel) is what digitlab/serving runs, and
it must never import TensorFlow (seconds and 600 MB; benchmarks/README.md, "Using the model without
TensorFlow").
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitlab.shared.errors import PipelineError
from digitlab.shared.rejection import thresholds_from_metadata

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
    (N, 28, 28, 1) float32, it returns their class probabilities (N, 10). `thresholds`: the "not a
    digit" confidence thresholds it carries, by number of views ({} if it was trained without them)."""

    def __init__(self, path: Path):
        import onnxruntime  # only the stages that read model.onnx pay for importing it

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.thresholds = thresholds_from_metadata(self.session.get_modelmeta().custom_metadata_map, str(path))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def load_onnx_model(path: str | Path) -> OnnxModel:
    """Load the model.onnx written by the train stage beside model.keras."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"model file {path} not found; run `dvc repro train` to export it")
    try:
        return OnnxModel(path)
    except PipelineError:
        raise
    except Exception as error:  # onnxruntime raises its own exception types, not exported by name
        raise PipelineError(
            f"{path} is not a readable ONNX model ({type(error).__name__}); run `dvc repro --force train`"
        ) from error


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
