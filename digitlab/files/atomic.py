"""Writing output files atomically, so that no stage ever leaves a half-written file.

Each file is written under a temporary name in its destination folder and renamed
into place only once complete; if anything fails or the process is interrupted,
the temporary file is removed. Run directly (`python -m stages.x`), a failed stage
therefore leaves the previous file as it was. Under `dvc repro`, DVC deletes a stage's
outputs before running it: a failed stage leaves them absent, never half-written, and
dvc.lock unchanged; `dvc checkout` (cached outputs) and `git checkout reports/` bring
the previous ones back.
"""

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from digitlab.shared.errors import UserError


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; on success, rename it into place."""
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        # Keep the suffix: Keras and Matplotlib choose the format from it.
        handle, temporary = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=f".partial{destination.suffix}"
        )
        os.close(handle)
    except OSError as error:
        raise UserError(
            f"cannot write to {destination.parent}: {error.strerror}; check that the folder is writable"
        ) from error
    temporary = Path(temporary)
    try:
        try:
            yield temporary
            os.replace(temporary, destination)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UserError(f"cannot write {destination}: the disk is full; free some space and rerun") from error
            if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise UserError(f"cannot write {destination}: {error.strerror}; check its permissions") from error
            raise
    finally:
        temporary.unlink(missing_ok=True)


def write_text(destination: str | os.PathLike, text: str) -> None:
    with atomic_path(destination) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(destination: str | os.PathLike, data) -> None:
    # allow_nan=False: DVC cannot read NaN or Infinity in metrics and plots files.
    write_text(destination, json.dumps(data, indent=2, allow_nan=False) + "\n")
