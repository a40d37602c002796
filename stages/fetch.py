"""Stage 1, fetch: download the four official MNIST files and verify their sha256.

Sources, tried in order for each file:
  1. the mirror named by the environment variable MNIST_MIRROR, a local directory or
     an http(s) base URL holding the files under their official names;
  2. the public mirrors in PUBLIC_MIRRORS, over HTTPS.
A file is only moved into the output folder once complete and verified.

Usage: python -m stages.fetch OUTPUT_DIR
"""

import argparse
import hashlib
import os
import shutil
import sys
import urllib.request
from pathlib import Path

from stages.atomic import atomic_path
from stages.errors import PipelineError, run_stage
from stages.mnist import SHA256
from stages.params import load_params

PUBLIC_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
CHUNK = 1 << 16


def sources() -> list[str]:
    """The mirror from MNIST_MIRROR (if set), then the public mirrors."""
    mirror = os.environ.get("MNIST_MIRROR", "").strip()
    if not mirror:
        return list(PUBLIC_MIRRORS)
    if mirror.startswith(("http://", "https://")):
        return [mirror.rstrip("/") + "/", *PUBLIC_MIRRORS]
    if not Path(mirror).is_dir():
        raise PipelineError(
            f"MNIST_MIRROR={mirror!r} is neither a directory nor an http(s) URL; "
            "point it at a folder holding the four .gz files, or unset it to download"
        )
    return [str(Path(mirror).resolve()), *PUBLIC_MIRRORS]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_with_progress(source, destination, total: int | None, label: str) -> None:
    """Copy a stream, printing progress on stderr every 10%."""
    done, next_report = 0, 10
    while chunk := source.read(CHUNK):
        destination.write(chunk)
        done += len(chunk)
        if total and done * 100 >= next_report * total:
            print(f"  {label}: {done * 100 // total}% of {total / 1e6:.1f} MB", file=sys.stderr, flush=True)
            next_report = done * 100 // total + 10


def download(source: str, name: str, destination: Path, timeout_s: float) -> None:
    """Copy `name` from one source (a directory or a base URL) into `destination`."""
    if source.startswith(("http://", "https://")):
        url = source + name
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(destination, "wb") as out:
            length = response.headers.get("Content-Length")
            copy_with_progress(response, out, int(length) if length else None, url)
    else:
        # A local copy takes a fraction of a second: no progress to show.
        with open(Path(source) / name, "rb") as mirror, open(destination, "wb") as out:
            shutil.copyfileobj(mirror, out, CHUNK)


class ChecksumMismatch(Exception):
    """A source's copy of a file is not the official one."""


def fetch_file(name: str, expected_sha256: str, output_dir: Path, timeout_s: float) -> None:
    """Fetch one file from the first source that has a good copy; raise if none does."""
    failures = []
    for source in sources():
        try:
            with atomic_path(output_dir / name) as temporary:
                download(source, name, temporary, timeout_s)
                actual = sha256_of(temporary)
                if actual != expected_sha256:
                    raise ChecksumMismatch(f"sha256 mismatch, expected {expected_sha256}, got {actual}")
        except (OSError, ChecksumMismatch) as error:
            # Timeouts, refused connections and HTTP errors are all OSErrors.
            failures.append(f"{source}: {getattr(error, 'reason', None) or error}")
            print(f"  {name}: {failures[-1]}; trying the next source", file=sys.stderr)
            continue
        print(f"fetched {name} from {source} (sha256 verified)")
        return
    raise PipelineError(
        f"could not fetch {name}; tried " + "; ".join(failures)
        + ". Check your network, or set MNIST_MIRROR to a folder holding the official files"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    args = parser.parse_args(argv)
    params = load_params()["fetch"]

    for name, expected in SHA256.items():
        fetch_file(name, expected, args.output_dir, params["timeout_s"])
    print(f"fetch: the four MNIST files are in {args.output_dir}/")


if __name__ == "__main__":
    run_stage(main)
