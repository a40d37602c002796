"""What mnist-predict (cli) and mnist-app (app) share: their --views and --accept-all options, the note
for a model without a "not a digit" threshold, and the quieting of onnxruntime's start-up warnings."""

import argparse
import contextlib
import os
import sys
from pathlib import Path

from digitlab.shared.tta import DEFAULT_VIEWS, VIEWS

from digitlab.serving.reader import DigitReader


def add_views_option(parser: argparse.ArgumentParser) -> None:
    """--views, for mnist-predict and mnist-app alike."""
    parser.add_argument(
        "--views",
        type=int,
        choices=sorted(VIEWS),
        default=DEFAULT_VIEWS,
        help="test-time augmentation: average over the image and its 4 (or 8) one-pixel shifts; "
        f"1 for none (default {DEFAULT_VIEWS}, as the evaluate stage)",
    )


def add_accept_all_option(parser: argparse.ArgumentParser) -> None:
    """--accept-all, for mnist-predict and mnist-app alike."""
    parser.add_argument(
        "--accept-all", action="store_true", help='give every image its most likely digit, never "not a digit"'
    )


def threshold_note(reader: DigitReader, model: Path, accept_all: bool) -> str | None:
    """A note for a model that carries no "not a digit" threshold: every image will get a digit."""
    if reader.threshold is not None or accept_all:
        return None
    return (
        f'note: {model} carries no "not a digit" threshold for {reader.views} views (it was trained before '
        "there was one), so every image gets a digit; `dvc repro train` trains one that has it"
    )


@contextlib.contextmanager
def native_stderr_hidden():
    """Hide what C++ code writes to stderr meanwhile: onnxruntime's start-up warnings (a GPU it cannot
    query, say), which it writes before a session's log level applies and which would bury the one-line
    errors. Python's own messages and tracebacks still show.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
