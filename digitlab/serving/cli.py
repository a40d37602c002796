"""mnist-predict: read the digit in each of your own images with the trained model.

  mnist-predict PATH...                      one line per image: `photo.jpg: 7 (99.8%), runner-up 1`
  mnist-predict --json PATH...               one JSON object per image and line (Reading.to_dict's fields)
  mnist-predict --model other.onnx PATH...   another model than data/model/model.onnx
  mnist-predict --show figure.png PATH...    also draw the first images, what the model saw, the probabilities
  mnist-predict --accept-all PATH...         a digit for every image, even one that is "not a digit"

A PATH is an image Pillow reads, or a folder: the IMAGE_SUFFIXES files directly in it, by name. A file
that cannot be read, holds no digit or is "not a digit" (below the threshold model.onnx carries) gets a
line `error: FILE: reason` on stderr (with --json, also its object, digit null); the others are still
read, and the exit status is 1 (0 when every file gave a digit). TensorFlow is never imported, so the
serving-only install is enough (docs/using-the-model.md); --show also needs Matplotlib.
"""

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from digitlab.shared.errors import UserError

import numpy as np
from PIL import Image

from digitlab.files.atomic import atomic_path
from digitlab.images.mnist_look import NO_DIGIT
from digitlab.inference.rejection import NOT_A_DIGIT
from digitlab.serving.options import add_accept_all_option, add_views_option, native_stderr_hidden, threshold_note
from digitlab.serving.reader import DEFAULT_MODEL, DigitReader, Reading

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CHUNK = 500  # files read and predicted at a time: memory stays bounded and lines come out as they are ready
SHOW_LIMIT = 20  # rows of the --show figure; more would make it too tall to read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mnist-predict",
        description=__doc__.splitlines()[0],
        epilog="A folder means the images in it, sorted by name.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="an image, or a folder of images")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help=f"the trained model as ONNX (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--show", type=Path, metavar="OUT.png", help="draw the images and their probabilities here")
    add_views_option(parser)
    add_accept_all_option(parser)
    args = parser.parse_args(argv)
    if args.show is not None and args.show.suffix.lower() != ".png":
        parser.error(f"--show {args.show}: the figure is a PNG file, give a name ending in .png")
    if args.show is not None and importlib.util.find_spec("matplotlib") is None:
        parser.error(
            "--show draws with Matplotlib, which the serving-only install leaves out: "
            "`pip install matplotlib`, or install the pipeline (`uv sync --frozen`)"
        )

    try:
        with native_stderr_hidden():
            reader = DigitReader(args.model, views=args.views, accept_all=args.accept_all)
        if no_threshold := threshold_note(reader, args.model, args.accept_all):
            print(no_threshold, file=sys.stderr)
        files, all_read = image_files(args.paths)
        shown = []
        with reader:  # its worker processes stop before the command ends, however it ends
            for start in range(0, len(files), CHUNK):
                for reading in reader.read(files[start : start + CHUNK]):
                    if not report(reading, args.json):
                        all_read = False
                    if len(shown) < SHOW_LIMIT:
                        shown.append(reading)
                sys.stdout.flush()
        if args.show is not None and shown:
            draw(shown, len(files), args.show)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mnist-predict ... | head`: the reader has gone, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's exit flush is quiet
        return 0
    return 0 if all_read else 1


def image_files(paths: list[Path]) -> tuple[list[Path], bool]:
    """The files named, with each folder replaced by the images in it; False if a folder holds none."""
    files, all_found = [], True
    for path in paths:
        if not path.is_dir():
            files.append(path)  # a missing or unreadable file is the reader's to report, in its place
            continue
        inside = sorted(file for file in path.iterdir() if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file())
        if not inside:
            print(
                f"error: {path}: a folder with no images in it (looked for {', '.join(IMAGE_SUFFIXES)})",
                file=sys.stderr,
            )
            all_found = False
        files.extend(inside)
    return files, all_found


def printable(name: str) -> str:
    """`name` with control characters written as escapes (a newline as \\n), so that one file stays one line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in name)


def report(reading: Reading, as_json: bool) -> bool:
    """Print what was read in one file (stdout), or why nothing was (stderr); True if a digit was read."""
    if as_json:
        print(json.dumps(reading.to_dict()))  # JSON escapes control characters itself
    if reading.error == NOT_A_DIGIT:
        guess = int(np.argmax(reading.probabilities))
        print(
            f"error: {printable(reading.path)}: {NOT_A_DIGIT} (the best guess, {guess}, has only "
            f"{reading.confidence:.1%} confidence; --accept-all gives it anyway)",
            file=sys.stderr,
        )
        return False
    if reading.error is not None:
        print(f"error: {printable(reading.path)}: {reading.error}", file=sys.stderr)
        return False
    if not as_json:
        print(f"{printable(reading.path)}: {reading.digit} ({reading.confidence:.1%}), runner-up {reading.runner_up}")
    return True


def draw(readings: list[Reading], total: int, path: Path) -> None:
    """One row per image: the file as it is, the 28x28 image the model saw, and the ten probabilities."""
    import matplotlib.pyplot as plt  # only here: the figure is optional, and Matplotlib is slow to import

    figure, axes = plt.subplots(
        len(readings), 3, figsize=(9, 2.2 * len(readings)), squeeze=False, gridspec_kw={"width_ratios": [1, 1, 2]}
    )
    for (original, seen, bars), reading in zip(axes, readings):
        for axis in (original, seen):
            axis.set_xticks([])
            axis.set_yticks([])
        original.set_title(Path(reading.path).name, fontsize=9)
        if reading.error in (None, NO_DIGIT):  # a file that could be read: draw it, framed (it may be blank)
            original.imshow(picture(reading.path), cmap="gray")
        else:
            original.axis("off")
        if reading.image is not None:
            seen.imshow(reading.image, cmap="gray", vmin=0, vmax=255)
            seen.set_title("what the model saw", fontsize=9)
        else:
            seen.axis("off")
        if reading.probabilities is None:
            bars.axis("off")
            bars.text(0.5, 0.5, reading.error, ha="center", va="center", wrap=True, color="tab:red")
            continue
        bars.bar(range(10), reading.probabilities, color=["tab:gray"] * 10)
        bars.set_xticks(range(10))
        bars.set_ylim(0, 1)
        if reading.digit is None:  # not a digit: the probabilities, none of them high enough
            bars.set_title(
                f"{NOT_A_DIGIT} (best guess {int(np.argmax(reading.probabilities))}, {reading.confidence:.1%})",
                fontsize=9,
                color="tab:red",
            )
            continue
        bars.patches[reading.digit].set_color("tab:blue")
        bars.set_title(f"{reading.digit} ({reading.confidence:.1%}), runner-up {reading.runner_up}", fontsize=9)
    shown = f"the first {len(readings)} of {total} images" if total > len(readings) else f"{total} images"
    figure.suptitle(f"mnist-predict: {shown}")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=80)
    plt.close(figure)
    if total > len(readings):
        print(f"note: {path} shows the first {len(readings)} of {total} images", file=sys.stderr)


def picture(path: str) -> np.ndarray:
    """A thumbnail of the file's first frame, as it is (not as the model saw it), for the figure."""
    with Image.open(path) as image:
        image.thumbnail((256, 256))
        if image.mode.startswith(("I", "F")):  # 16-bit or float greys: imshow scales them to their own range
            return np.asarray(image, dtype=np.float32)
        return np.asarray(image.convert("RGB"))


if __name__ == "__main__":
    sys.exit(main())
