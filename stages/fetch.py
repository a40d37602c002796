"""Stage 1, fetch: download the four official MNIST files and verify their sha256.

Sources, tried in order for each file:
  1. the mirror named by the environment variable MNIST_MIRROR, a local directory or
     an http(s) base URL holding the files under their official names;
  2. the public mirrors (digitlab/shared/mnist.py), over HTTPS.
pooch writes each file under a temporary name and moves it into OUTPUT_DIR only once its
sha256 matches, so a failed or interrupted download leaves nothing behind.

Usage: python -m stages.fetch OUTPUT_DIR
"""

import os
import shutil
import sys
from pathlib import Path

from digitlab.shared.command import stage_paths
from digitlab.shared.errors import UserError, run_command
from digitlab.shared.mnist import PUBLIC_MIRRORS, SHA256
from digitlab.shared.params import load_params

import pooch


def sources() -> list[str]:
    """The mirror from MNIST_MIRROR (if set), then the public mirrors."""
    mirror = os.environ.get("MNIST_MIRROR", "").strip()
    if mirror.startswith(("http://", "https://")):
        return [mirror.rstrip("/") + "/", *PUBLIC_MIRRORS]
    if mirror and not Path(mirror).is_dir():
        raise UserError(
            f"MNIST_MIRROR={mirror!r} is neither a directory nor an http(s) URL; "
            "point it at a folder holding the four .gz files, or unset it to download"
        )
    return [str(Path(mirror).resolve()), *PUBLIC_MIRRORS] if mirror else list(PUBLIC_MIRRORS)


def copy_file(source: str, destination: str, pooch_instance=None) -> None:
    """pooch's downloader for a file in a local folder: a plain copy."""
    shutil.copyfile(source, destination)


def fetch_file(name: str, output_dir: Path, timeout_s: float) -> None:
    """Fetch one file from the first source that has a good copy; raise if none does."""
    target = output_dir / name
    if target.is_file() and pooch.file_hash(str(target)) == SHA256[name]:
        print(f"kept {target} (sha256 verified)")
        return
    failures = []
    for source in sources():
        is_url = source.startswith(("http://", "https://"))
        try:
            pooch.retrieve(
                source + name if is_url else os.path.join(source, name),
                f"sha256:{SHA256[name]}",
                fname=name,
                path=output_dir,
                downloader=pooch.HTTPDownloader(progressbar=True, timeout=timeout_s) if is_url else copy_file,
            )
        except (OSError, ValueError) as error:  # HTTP and network errors are OSErrors; a wrong sha256 a ValueError
            failures.append(f"{source}: {str(error).split('. Deleted')[0]}")
            print(f"  {name}: {failures[-1]}; trying the next source", file=sys.stderr, flush=True)
            continue
        target.chmod(0o644)  # pooch's temporary file was private to its owner
        print(f"fetched {name} from {source} (sha256 verified)")
        return
    raise UserError(
        f"could not fetch {name}; tried "
        + "; ".join(failures)
        + ". Check your network, or set MNIST_MIRROR to a folder holding the official files"
    )


def main(argv: list[str] | None = None) -> None:
    args = stage_paths(__doc__, ["output_dir"], argv)
    params = load_params().fetch

    for name in SHA256:
        fetch_file(name, args.output_dir, params.timeout_s)
    print(f"fetch: the four MNIST files are in {args.output_dir}/")


if __name__ == "__main__":
    run_command(main)
