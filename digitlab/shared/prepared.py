"""The prepared arrays: what the model sees in training, evaluation and prediction.

Train, evaluate and sample_predict depend on this module and not on the raw MNIST
files, so that an edit to how raw files are read does not retrain the model.
"""

from pathlib import Path

import numpy as np

from digitlab.shared.atomic import atomic_path
from digitlab.shared.errors import PipelineError

IMAGE_SIZE = 28
CLASSES = tuple(range(10))


def to_model_input(images: np.ndarray) -> np.ndarray:
    """Scale uint8 images to float32 in [0, 1] and add the channel axis: (N, 28, 28, 1)."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def save_arrays(path: str | Path, **arrays: np.ndarray) -> None:
    """Store named arrays as an .npz file, written atomically."""
    with atomic_path(path) as temporary:
        np.savez(temporary, **arrays)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Load an .npz file written by `save_arrays`, never unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except FileNotFoundError as error:
        raise PipelineError(f"{path} not found; run `dvc repro` to produce it") from error
    except (ValueError, OSError) as error:
        raise PipelineError(f"{path} is not a readable .npz file ({error}); run `dvc repro --force preprocess`") from error
