"""Reading IDX files, the simple binary format MNIST is published in.

An IDX file is a header (two zero bytes, a type code, the number of dimensions,
then each dimension as a big-endian 32-bit integer) followed by the values.
MNIST uses unsigned bytes only (type code 0x08). Files may be gzip-compressed.
"""

import gzip
import struct
import zlib
from pathlib import Path

from digitlab.shared.errors import UserError

import numpy as np

UNSIGNED_BYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except FileNotFoundError as error:
        raise UserError(f"{path} not found; run `dvc repro fetch` to download it") from error
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise UserError(f"{path} is not a complete gzip file ({error}); delete it and run `dvc repro fetch`") from error


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Return the array stored in the IDX file at `path`, which must have `ndim` dimensions."""
    path = Path(path)
    data = _read_bytes(path)
    fix = "delete it and run `dvc repro fetch` to download it again"
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number); {fix}")
    type_code, dims = data[2], data[3]
    if type_code != UNSIGNED_BYTE:
        raise UserError(f"{path}: unsupported IDX type code {type_code:#04x}, expected 0x08; {fix}")
    if dims != ndim:
        raise UserError(f"{path}: IDX file has {dims} dimensions, expected {ndim}; {fix}")
    header_size = 4 + 4 * dims
    if len(data) < header_size:
        raise UserError(f"{path}: IDX header is truncated; {fix}")
    shape = struct.unpack(f">{dims}I", data[4:header_size])
    expected = header_size + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise UserError(
            f"{path}: header promises shape {shape} ({expected} bytes) but the file has {len(data)} bytes; {fix}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)
