"""Benchmark: mnist-predict on digits as people give them, not as MNIST stores them, and its speed.

The first --count MNIST test images become users' images (100-400 px, strokes thicker or thinner, off-centre;
dark ink on noisy paper, PNG or JPEG, or light ink on black). Accuracy: of the model on the 28x28 originals, of
the command's path (DigitReader; "not a digit" counts as wrong, its share given apart) and of a naive greyscale,
invert and resize. Speed: images/s of a `mnist-predict --json FOLDER` subprocess (start-up included), of
DigitReader in this process and of the model alone. With --baseline CHECKOUT it also runs another checkout's
command (PYTHONPATH=CHECKOUT, --baseline-model) on the same image and folder, and gives the ratios.

Usage: python benchmarks/predict_benchmark.py [--model data/model/model.onnx] [--mnist data/raw] [--count 10000]
                                              [--baseline CHECKOUT --baseline-model data/model/model.keras]
Prints a Markdown table and writes --output (benchmarks/predict_results.json).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from baseline import baseline_env, describe  # benchmarks/baseline.py, beside this script
from benchmark import machine_description  # benchmarks/benchmark.py, beside this script
from PIL import Image, ImageFilter, ImageOps

from digitlab.files.atomic import write_json
from digitlab.images.mnist_look import to_model_input
from digitlab.images.nondigits import with_look
from digitlab.inference.rejection import NOT_A_DIGIT
from digitlab.inference.views import predict_probabilities
from digitlab.raw.splits import load_split
from digitlab.serving.reader import DigitReader

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHUNK = 500  # files per DigitReader.read call, as the command does
TARGET_PP = 0.5  # the command's path should lose at most this many percentage points to the original images


def user_image(digit: np.ndarray, rng: np.random.Generator, on_paper: bool) -> tuple[Image.Image, str]:
    """One MNIST digit as a user's image of it, and the stroke change made ("as is", "thicker", "thinner")."""
    side = int(rng.integers(100, 401))
    ink = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    # Filters about a quarter of an MNIST pixel wide on each side: a pen a little broader or finer than MNIST's.
    stroke = ("as is", "thicker", "thinner")[int(rng.integers(3))]
    width = 2 * round(side / 28 / 4) + 1
    if stroke == "thicker":
        ink = ink.filter(ImageFilter.MaxFilter(width))
    elif stroke == "thinner":
        ink = ink.filter(ImageFilter.MinFilter(width))

    height, breadth = (int(side * rng.uniform(1.3, 2.0)) for _ in range(2))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, breadth - side + 1))
    placed = np.zeros((height, breadth), dtype=np.float32)
    placed[top : top + side, left : left + side] = np.asarray(ink, dtype=np.float32) / 255
    # The looks of users' images, as the pipeline's user digits and non-digits get them (digitlab/images/).
    return with_look(placed, "paper PNG" if on_paper else "light on black", rng), stroke


def write_images(images: np.ndarray, folder: Path, png_folder: Path) -> list[dict]:
    """Each digit as a user's image into `folder` (PNG or JPEG) and as PNG into `png_folder`; what was made."""
    rng = np.random.default_rng(0)
    made = []
    for index, digit in enumerate(images):
        on_paper = index % 2 == 0
        image, stroke = user_image(digit, rng, on_paper)
        suffix = ".jpg" if on_paper and index % 4 == 0 else ".png"
        image.save(folder / f"{index:05}{suffix}", quality=85)
        image.save(png_folder / f"{index:05}.png")
        made.append({"paper": on_paper, "jpeg": suffix == ".jpg", "stroke": stroke})
    return made


def naive_digits(model, files: list[Path], made: list[dict], views: int) -> np.ndarray:
    """Greyscale, invert the paper ones, squash to 28x28: what a user without digitlab.images.mnist_look does."""
    images = []
    for path, kind in zip(files, made):
        with Image.open(path) as image:
            grey = image.convert("L")
            grey = ImageOps.invert(grey) if kind["paper"] else grey
            images.append(np.asarray(grey.resize((28, 28), Image.Resampling.BILINEAR)))
    return predict_probabilities(model, to_model_input(np.stack(images)), CHUNK, views).argmax(axis=1)


def reader_digits(reader: DigitReader, files: list[Path]) -> tuple[np.ndarray, float]:
    """The command's path, in this process: digits (-1 where none was found, NOT_A_DIGIT_CODE where the
    reader answered "not a digit") and the seconds it took."""
    start = time.perf_counter()
    digits = []
    for first in range(0, len(files), CHUNK):
        readings = reader.read(files[first : first + CHUNK])
        digits += [code(reading.digit, reading.error) for reading in readings]
    return np.array(digits), time.perf_counter() - start


NOT_A_DIGIT_CODE = -2


def code(digit: int | None, error: str | None) -> int:
    """A reading as one int: the digit, -1 for no digit found or an unreadable file, -2 for "not a digit"."""
    return digit if digit is not None else NOT_A_DIGIT_CODE if error == NOT_A_DIGIT else -1


def command_digits(model_path: Path, path: Path, pythonpath: Path | None = None) -> tuple[np.ndarray, float, int]:
    """`mnist-predict --json PATH` as a user runs it: digits, wall seconds, and its peak memory in MB.

    The peak is /usr/bin/time's: getrusage(RUSAGE_CHILDREN) here would be wrong, because a child's
    ru_maxrss keeps the peak of this process (TensorFlow loaded, the images in memory) across exec.
    `pythonpath`: another checkout whose command to run instead of this one's."""
    env = dict(os.environ) if pythonpath is None else baseline_env(pythonpath)
    with tempfile.NamedTemporaryFile("r") as peak:
        command = [
            "/usr/bin/time",
            "--format",
            "%M",
            "--output",
            peak.name,
            str(Path(sys.executable).parent / "mnist-predict"),
            "--json",
            "--model",
            str(model_path),
            str(path),
        ]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=pythonpath or PROJECT_ROOT, env=env)
        seconds = time.perf_counter() - start
        peak_mb = round(int(peak.read().split()[-1]) / 1024)  # %M: kB
    if result.returncode not in (0, 1):  # 1: some file held no digit, which the accuracy counts as wrong
        sys.exit(f"error: {' '.join(command)} exited with {result.returncode}: {result.stderr.strip()[-500:]}")
    readings = [json.loads(line) for line in result.stdout.splitlines()]
    return np.array([code(reading["digit"], reading["error"]) for reading in readings]), seconds, peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PROJECT_ROOT / "data/model/model.onnx")
    parser.add_argument("--mnist", type=Path, default=PROJECT_ROOT / "data/raw", help="the four MNIST files")
    parser.add_argument("--count", type=int, default=10_000, help="how many test images (the first ones)")
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "benchmarks/predict_results.json")
    parser.add_argument("--baseline", type=Path, help="another checkout of this repository whose command to run too")
    parser.add_argument(
        "--baseline-model",
        type=Path,
        default=PROJECT_ROOT / "data/model/model.keras",
        help="the model file the baseline's command reads (default: data/model/model.keras)",
    )
    args = parser.parse_args()

    images, labels = load_split(args.mnist, "test")
    images, labels = images[: args.count], labels[: args.count]
    reader = DigitReader(args.model)

    # The same views as the command (DigitReader's default), so the paths differ only in how images are made.
    predict_probabilities(reader.model, to_model_input(images[:CHUNK]), CHUNK, reader.views)  # sets up; not timed
    start = time.perf_counter()
    probabilities = predict_probabilities(reader.model, to_model_input(images), CHUNK, reader.views)
    model_seconds = time.perf_counter() - start
    original = probabilities.argmax(axis=1)
    if reader.threshold is not None:  # as the reader answers: "not a digit" below the model's threshold
        original[probabilities.max(axis=1) < reader.threshold] = NOT_A_DIGIT_CODE

    with tempfile.TemporaryDirectory(prefix="predict_benchmark_") as temporary:
        folder, png_folder = Path(temporary, "user"), Path(temporary, "png")
        folder.mkdir()
        png_folder.mkdir()
        start = time.perf_counter()
        made = write_images(images, folder, png_folder)
        print(f"wrote {len(made)} images twice in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        files, png_files = sorted(folder.iterdir()), sorted(png_folder.iterdir())

        naive = naive_digits(reader.model, files, made, reader.views)
        read, _ = reader_digits(reader, files)
        _, reader_seconds = reader_digits(reader, png_files)
        _, start_up_seconds, start_up_peak_mb = command_digits(args.model, png_files[0])  # start-up and model load
        command, command_seconds, command_peak_mb = command_digits(args.model, png_folder)
        if args.baseline:
            # After this checkout's runs, on the same files: one machine, one run.
            baseline_model = args.baseline_model.resolve()
            _, base_start_up_seconds, base_start_up_peak_mb = command_digits(
                baseline_model, png_files[0], args.baseline
            )
            base_command, base_seconds, base_peak_mb = command_digits(baseline_model, png_folder, args.baseline)

    def accuracy(digits: np.ndarray, chosen: np.ndarray | None = None) -> float:
        chosen = np.ones(len(labels), dtype=bool) if chosen is None else chosen
        return round(float((digits[chosen] == labels[chosen]).mean()), 4)

    kinds = {
        "light ink on black, PNG": np.array([not kind["paper"] for kind in made]),
        "dark ink on paper, PNG": np.array([kind["paper"] and not kind["jpeg"] for kind in made]),
        "dark ink on paper, JPEG": np.array([kind["jpeg"] for kind in made]),
        **{
            f"strokes {stroke}": np.array([kind["stroke"] == stroke for kind in made])
            for stroke in ("as is", "thicker", "thinner")
        },
    }
    count = len(labels)
    results = {
        "date": date.today().isoformat(),
        "machine": machine_description(),
        "command": " ".join(["python benchmarks/predict_benchmark.py", *sys.argv[1:]]),
        "model": str(args.model),
        "count": count,
        "accuracy": {
            "original 28x28 test images": accuracy(original),
            "user images, mnist-predict's path": accuracy(read),
            "user images, naive path": accuracy(naive),
            "user images as PNG, mnist-predict --json subprocess": accuracy(command),
        },
        "no_digit_found": int((read == -1).sum()),
        # The reader's "not a digit" (digitlab/inference/rejection.py), counted as wrong in the accuracies above.
        "not_a_digit": {
            "threshold": reader.threshold,
            "original 28x28 test images": round(float((original == NOT_A_DIGIT_CODE).mean()), 4),
            "user images, mnist-predict's path": round(float((read == NOT_A_DIGIT_CODE).mean()), 4),
            "accuracy on the user images not refused": accuracy(read, read != NOT_A_DIGIT_CODE),
        },
        "accuracy_by_kind": {
            name: {
                "count": int(chosen.sum()),
                "mnist-predict": accuracy(read, chosen),
                "naive": accuracy(naive, chosen),
            }
            for name, chosen in kinds.items()
        },
        "speed_images_per_s": {
            "mnist-predict --json FOLDER (subprocess wall time)": round(count / command_seconds),
            "DigitReader.read in process (decode, prepare, predict)": round(count / reader_seconds),
            "model alone on 28x28 arrays": round(count / model_seconds),
        },
        "seconds": {
            "command": round(command_seconds, 1),
            "command_on_one_image": round(start_up_seconds, 2),
            "reader": round(reader_seconds, 1),
            "model": round(model_seconds, 2),
        },
        "command_peak_rss_mb": {"one image": start_up_peak_mb, "the folder": command_peak_mb},
    }
    if args.baseline:
        results["baseline"] = {
            "checkout": describe(args.baseline),
            "model": str(args.baseline_model),
            "accuracy, user images as PNG, mnist-predict --json subprocess": accuracy(base_command),
            "images_per_s, mnist-predict --json FOLDER": round(count / base_seconds),
            "seconds": {"command": round(base_seconds, 1), "command_on_one_image": round(base_start_up_seconds, 2)},
            "command_peak_rss_mb": {"one image": base_start_up_peak_mb, "the folder": base_peak_mb},
        }
    write_json(args.output, results)
    print(markdown(results))
    loss = 100 * (accuracy(original) - accuracy(read))
    print(f"\nmnist-predict's path loses {loss:.2f} percentage points (target: at most {TARGET_PP})")
    refused = results["not_a_digit"]["user images, mnist-predict's path"]
    print(f'the reader answers "not a digit" for {refused:.2%} of the user images (target: at most 2%)')
    print(f"wrote {args.output}")


def markdown(results: dict) -> str:
    lines = [
        f"{results['count']:,} MNIST test images; {results['machine']}; {results['date']}",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    lines += [f"| accuracy, {name} | {value:.2%} |" for name, value in results["accuracy"].items()]
    lines += [
        f'| "not a digit", {name} | {value:.2%} |'
        for name, value in results["not_a_digit"].items()
        if name != "threshold"
    ]
    lines += [f"| images/s, {name} | {value:,} |" for name, value in results["speed_images_per_s"].items()]
    lines += [f"| seconds of mnist-predict on one image (start-up) | {results['seconds']['command_on_one_image']} |"]
    lines += [
        f"| peak memory of mnist-predict on {name} | {mb:,} MB |" for name, mb in results["command_peak_rss_mb"].items()
    ]
    lines += ["", "| kind of image | count | mnist-predict | naive |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {row['count']:,} | {row['mnist-predict']:.2%} | {row['naive']:.2%} |"
        for name, row in results["accuracy_by_kind"].items()
    ]
    if "baseline" in results:
        base, name = results["baseline"], "mnist-predict --json FOLDER (subprocess wall time)"
        ours = {
            "one image: seconds": results["seconds"]["command_on_one_image"],
            "one image: peak memory, MB": results["command_peak_rss_mb"]["one image"],
            f"{results['count']:,} PNGs: images/s": results["speed_images_per_s"][name],
            f"{results['count']:,} PNGs: peak memory, MB": results["command_peak_rss_mb"]["the folder"],
            f"{results['count']:,} PNGs: accuracy": results["accuracy"][
                "user images as PNG, mnist-predict --json subprocess"
            ],
        }
        theirs = [
            base["seconds"]["command_on_one_image"],
            base["command_peak_rss_mb"]["one image"],
            base["images_per_s, mnist-predict --json FOLDER"],
            base["command_peak_rss_mb"]["the folder"],
            base["accuracy, user images as PNG, mnist-predict --json subprocess"],
        ]
        lines += [
            "",
            f"| mnist-predict | baseline: {base['checkout']}, {Path(base['model']).name} | "
            f"this: {Path(results['model']).name} | ratio |",
            "|---|---|---|---|",
        ]
        for (measure, after), before in zip(ours.items(), theirs):
            if "accuracy" in measure:
                lines.append(f"| {measure} | {before:.2%} | {after:.2%} | |")
                continue
            better = after / before if "images/s" in measure else before / after
            lines.append(f"| {measure} | {before:,} | {after:,} | {better:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
