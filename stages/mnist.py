"""The MNIST data set: its official files, their checksums, and how images become model input.

Everything that knows what MNIST looks like lives here, so that fetch, explore,
preprocess, evaluate and sample_predict agree on it, and so that the model sees
the same input in training, evaluation and prediction.
"""

from pathlib import Path

import numpy as np

from stages.atomic import atomic_path
from stages.errors import PipelineError
from stages.idx import read_idx

IMAGE_SIZE = 28
CLASSES = tuple(range(10))

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
