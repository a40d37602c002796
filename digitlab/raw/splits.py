"""Reading the raw MNIST files that fetch downloaded (their names and checksums: digitlab/shared/mnist.py).

Explore and preprocess read them; train and later stages see only the prepared arrays
(digitlab/files/arrays.py), so that changes here never retrain the model.
"""

from pathlib import Path

from digitlab.shared.errors import UserError
from digitlab.shared.mnist import CLASSES, FILES, IMAGE_SIZE

import numpy as np

from digitlab.raw.idx import read_idx


def load_split(raw_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images, labels) of the "train" or "test" split: uint8 (N, 28, 28) and uint8 (N,)."""
    images_file, labels_file = (Path(raw_dir) / name for name in FILES[split])
    images = read_idx(images_file, ndim=3)
    labels = read_idx(labels_file, ndim=1)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise UserError(f"{images_file}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise UserError(
            f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} labels; "
            "run `dvc repro fetch` to download both again"
        )
    if labels.size and labels.max() > CLASSES[-1]:
        raise UserError(f"{labels_file}: label {labels.max()} is outside 0-9; run `dvc repro fetch`")
    return images, labels
