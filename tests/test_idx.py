"""IDX parsing: good files round-trip; every kind of damaged file gets a clear UserError."""

import gzip
import struct

from digitlab.shared.errors import UserError

import numpy as np
import pytest

from digitlab.raw.idx import read_idx
from digitlab.raw.splits import load_split
from tests.conftest import write_idx


def header(ndim_code: int, *shape: int, type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, ndim_code]) + struct.pack(f">{len(shape)}I", *shape)


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_written_file_reads_back_identically(tmp_path, name):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / name, array)
    np.testing.assert_array_equal(read_idx(tmp_path / name, ndim=3), array)


def test_gzip_output_is_byte_reproducible(tmp_path):
    array = np.ones((3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"\x00\x01", "bad magic number"),
        (b"\x00", "bad magic number"),
        (header(1, 2, type_code=0x0D) + b"\x00" * 8, "type code 0x0d"),
        (header(2, 1, 2) + b"\x00\x01", "2 dimensions, expected 1"),
        (b"\x00\x00\x08\x01\x00\x00", "header is truncated"),
        (header(1, 5) + b"\x00\x01", "promises shape (5,)"),
        (header(1, 2) + b"\x00\x01\x02", "the file has 11 bytes"),
    ],
    ids=[
        "wrong-magic",
        "too-short-for-magic",
        "wrong-type",
        "wrong-ndim",
        "truncated-header",
        "truncated-data",
        "trailing-bytes",
    ],
)
def test_malformed_file_is_reported(tmp_path, content, message):
    path = tmp_path / "labels.idx"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        read_idx(path, ndim=1)
    assert str(path) in str(error.value) and "dvc repro fetch" in str(error.value)


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "labels.idx.gz"
    path.write_bytes(gzip.compress(header(1, 1000) + bytes(1000))[:-20])
    with pytest.raises(UserError, match="not a complete gzip file"):
        read_idx(path, ndim=1)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(UserError, match="not found; run `dvc repro fetch`"):
        read_idx(tmp_path / "absent.gz", ndim=1)


def test_load_split_returns_images_and_labels(tiny_raw_dir):
    images, labels = load_split(tiny_raw_dir, "train")
    assert images.shape == (40, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(40)]


def test_load_split_rejects_count_mismatch(tiny_raw_dir):
    write_idx(tiny_raw_dir / "train-labels-idx1-ubyte.gz", np.zeros(39, dtype=np.uint8))
    with pytest.raises(UserError, match="40 images but .* 39 labels"):
        load_split(tiny_raw_dir, "train")


def test_load_split_rejects_labels_outside_0_to_9(tiny_raw_dir):
    write_idx(tiny_raw_dir / "t10k-labels-idx1-ubyte.gz", np.full(20, 10, dtype=np.uint8))
    with pytest.raises(UserError, match="label 10 is outside 0-9"):
        load_split(tiny_raw_dir, "test")


def test_load_split_rejects_images_that_are_not_28x28(tiny_raw_dir):
    write_idx(tiny_raw_dir / "t10k-images-idx3-ubyte.gz", np.zeros((20, 32, 32), dtype=np.uint8))
    with pytest.raises(UserError, match="expected 28x28"):
        load_split(tiny_raw_dir, "test")
