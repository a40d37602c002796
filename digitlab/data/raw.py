"""The raw MNIST data set: its four official files, where they are published, their checksums.

Fetch, explore and preprocess read these files; train and later stages see only the
prepared arrays (digitlab/shared/prepared.py), so that changes here never retrain the model.
"""

from pathlib import Path

import numpy as np

from digitlab.data.idx import read_idx
from digitlab.shared.errors import PipelineError
from digitlab.shared.prepared import CLASSES, IMAGE_SIZE

# Public mirrors of the official files, tried in this order (yann.lecun.com no longer serves them).
PUBLIC_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)

# sha256 of the four official files (the same bytes on every public mirror).
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def load_split(raw_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images, labels) of the "train" or "test" split: uint8 (N, 28, 28) and uint8 (N,)."""
    images_file, labels_file = (Path(raw_dir) / name for name in FILES[split])
    images = read_idx(images_file, ndim=3)
    labels = read_idx(labels_file, ndim=1)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise PipelineError(f"{images_file}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise PipelineError(
            f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} labels; "
            "run `dvc repro fetch` to download both again"
        )
    if labels.size and labels.max() > CLASSES[-1]:
        raise PipelineError(f"{labels_file}: label {labels.max()} is outside 0-9; run `dvc repro fetch`")
    return images, labels
