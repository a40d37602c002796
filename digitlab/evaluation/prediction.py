"""Using a trained model: load the train stage's file and predict class probabilities.

Kept apart from digitlab/training/model.py and digitlab/training/fitting.py (dependencies of train) so
that a change to how we predict re-runs evaluate and sample_predict, not training.
"""

import zipfile
from pathlib import Path

import keras
import numpy as np

from digitlab.shared.errors import PipelineError
from digitlab.shared.views import VIEWS


def load_model(path: str | Path) -> keras.Model:
    """Load a model written by the train stage; safe mode refuses embedded Python code."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"model file {path} not found; run `dvc repro train` to train it")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError) as error:
        raise PipelineError(
            f"{path} is not a readable Keras model ({type(error).__name__}); run `dvc repro --force train`"
        ) from error


def shifted(images: np.ndarray, down: int, right: int) -> np.ndarray:
    """`images` (N, H, W, C) moved by whole pixels, the background (0) coming in at the edges."""
    if not (down or right):
        return images
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return padded[:, 1 - down:1 - down + height, 1 - right:1 - right + width]


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int, views: int = 1) -> np.ndarray:
    """Class probabilities of `images`, averaged over `views` (1, 5 or 9, see VIEWS), one
    `predict_on_batch` call per batch.

    Not `model.predict`: timed over the test set, it now and then fell into a mode twice as slow,
    whatever the batch size; this loop gives the same probabilities to the bit and never did
    (benchmarks/README.md, "Inference").
    """
    def probabilities(batch: np.ndarray) -> np.ndarray:
        # All the views of a batch in one call: fewer, larger calls are faster on a CPU.
        every_view = np.concatenate([shifted(batch, down, right) for down, right in VIEWS[views]])
        return np.asarray(model.predict_on_batch(every_view)).reshape(views, len(batch), -1).mean(axis=0)

    return np.concatenate([probabilities(images[start:start + batch_size])
                           for start in range(0, len(images), batch_size)])
