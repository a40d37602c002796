"""Shared fixtures: small IDX files, and the local MNIST mirror the end-to-end tests use."""

import os
from pathlib import Path

import numpy as np
import pytest

from stages.idx import write_idx

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def mnist_mirror() -> Path | None:
    """MNIST_MIRROR if it is a directory, else ../shared/data/mnist beside the project, else None."""
    candidates = [os.environ.get("MNIST_MIRROR", ""), PROJECT_ROOT.parent / "shared" / "data" / "mnist"]
    for candidate in candidates:
        if candidate and Path(candidate, "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate).resolve()
    return None


@pytest.fixture
def tiny_raw_dir(tmp_path) -> Path:
    """A raw folder in the official layout: 40 training and 20 test images, every class present."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    raw.mkdir()
    for split, count, prefix in (("train", 40, "train"), ("test", 20, "t10k")):
        labels = np.arange(count, dtype=np.uint8) % 10
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return raw
