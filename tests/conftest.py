"""Shared fixtures: fixed params, small IDX files, and the MNIST files the end-to-end tests use."""

import gzip
import importlib.util
import os
import signal
import site
import socket
import struct
import subprocess
import sys
from pathlib import Path

from digitlab.shared.mnist import SHA256
from digitlab.shared.params import Params, with_overrides

import numpy as np
import pytest

from digitlab.raw.idx import UNSIGNED_BYTE

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# A fixed, valid params.yaml for tests, so that they do not follow whatever the workspace holds
# (after `dvc exp apply` of another architecture, say). A fixture, not a copy of the defaults: the
# values stay put when params.yaml's defaults move (dense_units and batch_size already differ), so
# that tests keep the small, quick model they were written for. Only its keys must follow params.yaml
# (tests/test_params.py checks them).
BASE_PARAMS = {
    "seed": 42,
    "fetch": {"timeout_s": 60},
    "explore": {"sample_count": 36, "seed": 0},
    "data": {"validation_fraction": 0.1, "split_seed": 0, "max_train_samples": None},
    "model": {
        "background_window": 9,
        "conv_filters": [16, 32],
        "convs_per_block": 2,
        "kernel_size": 3,
        "padding": "valid",
        "pooling": "max",
        "batch_norm": True,
        "activation": "relu",
        "dense_units": 128,
        "dropout": 0.3,
    },
    "train": {
        "epochs": 12,
        "batch_size": 128,
        "optimizer": "adam",
        "learning_rate": 0.003,
        "lr_schedule": "cosine",
        "warmup_epochs": 0,
        "weight_decay": 0.0,
        "label_smoothing": 0.0,
        "ema_momentum": 0,
        "augment": {
            "rotation_degrees": 0,
            "shift_fraction": 0.1,
            "zoom_fraction": 0,
            "elastic_alpha": 0,
            "elastic_sigma": 4,
            "shear": 0,
            "stroke_width": 0,
        },
        "distribute": "none",
        "mixed_precision": "none",
    },
    "reject": {
        "outlier_share": 0.05,
        "outlier_weight": 1.0,
        "false_rejection": 0.002,
        "val_nondigits": 1400,
        "test_nondigits": 1400,
        "val_user_digits": 1400,
        "test_user_digits": 1400,
        "seed": 0,
    },
    "evaluate": {
        "batch_size": 500,
        "tta_views": 5,
        "calibration_bins": 10,
        "mistakes": 16,
        "corruption_images": 200,
        "corruption_seed": 0,
    },
    "sample_predict": {"count": 25, "seed": 0},
}


def free_ports(count: int) -> list[int]:
    """`count` distinct ports of 127.0.0.1 that were free just now (all held open until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzip-compressed when `path` ends in .gz: the tests' stand-ins for MNIST."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path = Path(path)
    # mtime=0 makes the compressed bytes, and so their checksum, reproducible.
    path.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)


def python_in(root: Path, *argv: str) -> subprocess.CompletedProcess:
    """`python ARGV...` in a scratch copy of the project at `root`, seeing that copy's digitlab and stages, not this
    checkout's: the installed libraries are on the path, but not the editable install's finder, which maps
    `digitlab` to this checkout (site-packages' .pth files are not run)."""
    setup = f"import sys; sys.path[:0] = [{str(root)!r}, *{site.getsitepackages()!r}]; sys.argv = {list(argv)!r}"
    run = "import runpy; runpy.run_path(sys.argv[0], run_name='__main__')"
    return subprocess.run([sys.executable, "-S", "-c", f"{setup}; {run}"], cwd=root, capture_output=True, text=True)


def ci_script(name: str):
    """`.ci/NAME.py` as a module (.ci/ is not a package): e.g. stage_deps, which computes code from the imports."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / ".ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_params(overrides: dict | None = None) -> Params:
    """BASE_PARAMS with dotted keys changed, e.g. {"train.epochs": 2}, validated."""
    return Params.model_validate(with_overrides(BASE_PARAMS, overrides or {}))


def mnist_mirror() -> Path | None:
    """A folder holding the four official MNIST files: MNIST_MIRROR, ../shared/data/mnist beside
    the project, or the project's own data/raw once `dvc repro` has fetched (and verified) them."""
    candidates = [
        os.environ.get("MNIST_MIRROR", ""),
        PROJECT_ROOT.parent / "shared" / "data" / "mnist",
        PROJECT_ROOT / "data" / "raw",
    ]
    for candidate in candidates:
        if candidate and all(Path(candidate, name).is_file() for name in SHA256):
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first 20 MNIST test images and their labels."""
    mirror = mnist_mirror()
    if mirror is None:
        pytest.skip("no MNIST files: run `dvc repro fetch`, or set MNIST_MIRROR to a folder holding them")
    from digitlab.raw.splits import load_split

    images, labels = load_split(mirror, "test")
    return images[:20], labels[:20]


@pytest.fixture
def tiny_raw_dir(tmp_path) -> Path:
    """A raw folder in the official layout: 40 training and 20 test images, every class present."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    raw.mkdir()
    for count, prefix in ((40, "train"), (20, "t10k")):
        labels = np.arange(count, dtype=np.uint8) % 10
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return raw


@pytest.fixture(scope="session")
def small_keras_model(tmp_path_factory) -> Path:
    """A model.keras trained in the test session on 12,000 MNIST images and 2,400 non-digits, with its
    model.onnx beside it carrying its "not a digit" thresholds, as the train stage trains and exports:
    the pipeline's recipe (12 epochs, the learning rate decayed to zero) on a fifth of its digits, in about
    a minute. Its threshold refuses 1% of its validation digits, not 0.2%: with 1,000 validation digits, 0.2%
    would rest on two of them. Two epochs were not enough: such models read a capital A or H drawn in the
    browser as a 4 (65-98% sure) where the pipeline's refuses both; at 12 epochs this one does too."""
    mirror = mnist_mirror()
    if mirror is None:
        pytest.skip("no MNIST files: run `dvc repro fetch`, or set MNIST_MIRROR to a folder holding them")
    from digitlab.images.mnist_look import to_model_input
    from digitlab.images.nondigits import prepared_nondigits
    from digitlab.inference.rejection import choose_threshold, thresholds_metadata
    from digitlab.raw.splits import load_split
    from digitlab.training.fitting import fit
    from digitlab.training.saving import export_onnx, save_model
    from stages.train import validation_confidences

    images, labels = load_split(mirror, "train")
    train = {"images": to_model_input(images[:12000]), "labels": labels[:12000]}
    val = {"images": to_model_input(images[-1000:]), "labels": labels[-1000:]}
    params = make_params({"train.epochs": 12, "train.batch_size": 64})
    path = tmp_path_factory.mktemp("model") / "model.keras"
    outliers, _ = prepared_nondigits(2400, 0, "train")
    model = fit(params, train, val, outliers=outliers["images"])
    save_model(model, path)
    thresholds = {
        views: choose_threshold(confidence, 0.01)
        for views, confidence in validation_confidences(model, val["images"]).items()
    }
    export_onnx(model, path.with_suffix(".onnx"), metadata=thresholds_metadata(thresholds))
    return path


@pytest.fixture(scope="session")
def small_model(small_keras_model) -> Path:
    """The model.onnx of small_keras_model: what the prediction command, DigitReader and the web app read."""
    return small_keras_model.with_suffix(".onnx")


def default_sigint() -> None:
    """Run in a child process before it starts: Ctrl-C's default action. A shell's background job ignores
    SIGINT and its children inherit that, so a test that interrupts a command must give it back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# Fixtures that cost a minute to build, once per test process. Under pytest-xdist (pyproject's addopts run
# two processes, `--dist loadgroup`), the tests that use one of them go to one process, in two groups of the
# small pipeline's tests that each process can take, building the pipeline once each.
COSTLY_FIXTURES = {
    "experimented": "experiments",
    "experiment_clone": "experiments",
    "pipeline": "pipeline",
    "clone": "pipeline",
    "small_keras_model": "small model",
    "small_model": "small model",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        names = getattr(item, "fixturenames", ())
        group = next((COSTLY_FIXTURES[name] for name in COSTLY_FIXTURES if name in names), None)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
