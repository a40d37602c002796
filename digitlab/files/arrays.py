"""The prepared arrays' files, which preprocess writes and train, evaluate and sample_predict read, and a short
fingerprint of arrays' bytes."""

import hashlib
from pathlib import Path

from digitlab.shared.errors import UserError

import numpy as np

from digitlab.files.atomic import atomic_path


def save_arrays(path: str | Path, **arrays: np.ndarray) -> None:
    """Store named arrays as an .npz file, written atomically."""
    with atomic_path(path) as temporary:
        np.savez(temporary, **arrays)


def fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of the arrays' bytes: equal for the same values in the same order (test images, a model's
    weights)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Load an .npz file written by `save_arrays`, never unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except FileNotFoundError as error:
        raise UserError(f"{path} not found; run `dvc repro` to produce it") from error
    except (ValueError, OSError) as error:
        raise UserError(f"{path} is not a readable .npz file ({error}); run `dvc repro --force preprocess`") from error
