"""model.onnx, the train stage's model as users run it: loaded with onnxruntime, its "not a digit"
thresholds read from its metadata.

Train (which checks its export), evaluate, sample_predict and digitlab/serving all load it here, and
none of them imports TensorFlow for it (seconds and 600 MB; benchmarks/README.md, "Using the model
without TensorFlow").
"""

from pathlib import Path

from digitlab.shared.errors import UserError

import numpy as np

from digitlab.inference.rejection import thresholds_from_metadata


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
        raise UserError(f"model file {path} not found; run `dvc repro train` to export it")
    try:
        return OnnxModel(path)
    except UserError:
        raise
    except Exception as error:  # onnxruntime raises its own exception types, not exported by name
        raise UserError(
            f"{path} is not a readable ONNX model ({type(error).__name__}); run `dvc repro --force train`"
        ) from error
