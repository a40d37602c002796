"""Benchmark: MNIST-C on the validation digits, to choose robustness changes by (evaluate's robust.* is test).

Scores each --model under MNIST-C's 15 corruptions (digitlab.evaluation.corruptions, seed --seed) of the
validation digits (data/prepared/val.npz), read with 1 view as evaluate reads them, and on the clean
digits. With --windows it also puts a RemoveBackground layer (digitlab.training.model; the white top-hat
that `model.background_window` builds in) of each window in front of each model, without retraining:
a model trained without the layer tells how much taking the background away could give before anyone
trains with it (0 = the model as it is). Corrupting the 5,999 digits takes about 2 minutes on 2 cores.

Usage: python benchmarks/robustness_benchmark.py [--model data/model/model.keras ...] [--windows 0 7 9 11]
Prints a Markdown table (accuracy per corruption, clean, mean and worst) and writes --output
(benchmarks/robustness_results.json).
"""

import argparse
import time
from datetime import date
from pathlib import Path

from digitlab.shared.params import is_background_window

import keras
import numpy as np
from benchmark import machine_description  # benchmarks/benchmark.py, beside this script

from digitlab.evaluation.corruptions import CORRUPTIONS, corrupt
from digitlab.files.arrays import load_arrays
from digitlab.files.atomic import write_json
from digitlab.training.model import RemoveBackground
from digitlab.training.saving import load_model

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def with_window(model: keras.Model, window: int) -> keras.Model:
    """`model` with RemoveBackground(window) in front of it (0: `model` itself)."""
    if not window:
        return model
    inputs = keras.Input(shape=model.input_shape[1:])
    return keras.Model(inputs, model(RemoveBackground(window)(inputs)))


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    return float((model.predict(images, batch_size=500, verbose=0).argmax(axis=1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, nargs="+", default=[PROJECT_ROOT / "data/model/model.keras"])
    parser.add_argument("--windows", type=int, nargs="+", default=[0])
    parser.add_argument("--prepared", type=Path, default=PROJECT_ROOT / "data/prepared")
    parser.add_argument("--seed", type=int, default=0, help="the corruptions' random draws")
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "benchmarks/robustness_results.json")
    args = parser.parse_args()
    if not all(is_background_window(window) for window in args.windows):
        parser.error(f"--windows: each 0 (no layer) or an odd width of at least 3, got {args.windows}")

    val = load_arrays(args.prepared / "val.npz")
    images, labels = val["images"], val["labels"]
    readers = {
        f"{path} + window {window}" if window else str(path): with_window(load_model(path), window)
        for path in args.model
        for window in args.windows
    }
    scores = {name: {"clean": accuracy(model, images, labels)} for name, model in readers.items()}
    for corruption in CORRUPTIONS:
        started = time.perf_counter()
        corrupted = corrupt(images, corruption, args.seed)
        for name, model in readers.items():
            scores[name][corruption] = accuracy(model, corrupted, labels)
        print(f"{corruption}: {time.perf_counter() - started:.0f} s", flush=True)
    for row in scores.values():
        under = [row[corruption] for corruption in CORRUPTIONS]
        row["mean"], row["worst"] = float(np.mean(under)), min(under)

    print(f"\nMNIST-C on {len(labels):,} validation digits, seed {args.seed}; {machine_description()}\n")
    columns = ["clean", *CORRUPTIONS, "mean", "worst"]
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in scores.items():
        print(f"| {name} | " + " | ".join(f"{100 * row[column]:.2f}%" for column in columns) + " |")
    write_json(
        args.output,
        {
            "date": date.today().isoformat(),
            "machine": machine_description(),
            "images": len(labels),
            "seed": args.seed,
            "scores": scores,
        },
    )
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
