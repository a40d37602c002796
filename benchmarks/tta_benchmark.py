"""Benchmark: test-time augmentation (the image and its one-pixel shifts) on the validation split.

For 1, 5 and 9 views (digitlab/shared/tta.py, VIEWS) it measures, with the model of
data/model/model.keras, on data/prepared/val.npz: accuracy, errors, cross-entropy, ECE (the
evaluate stage's bins) and images/s (the second of two timed runs). The test split is left to the
evaluate stage (`evaluate.tta_views`), so the choice is made on validation only; pass --split test
to see the test figures once the choice is made.

Prints a Markdown table and writes --output (benchmarks/tta_results.json).

Usage: python benchmarks/tta_benchmark.py [--model data/model/model.keras] [--split val]
"""

import argparse
import json
import time
from datetime import date
from pathlib import Path

from digitlab.shared.params import load_params
from digitlab.shared.tta import VIEWS

from benchmark import machine_description  # benchmarks/benchmark.py, beside this script

from digitlab.evaluation.scores import cross_entropy, reliability
from digitlab.files.arrays import load_arrays
from digitlab.inference.views import predict_probabilities
from digitlab.training.saving import load_model

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PROJECT_ROOT / "data/model/model.keras")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "benchmarks/tta_results.json")
    args = parser.parse_args()
    params = load_params(PROJECT_ROOT / "params.yaml").evaluate
    model = load_model(args.model)
    arrays = load_arrays(PROJECT_ROOT / f"data/prepared/{args.split}.npz")
    images, labels = arrays["images"], arrays["labels"]

    rows = []
    for views in VIEWS:
        for _ in range(2):  # the first run builds the prediction graph; time the second
            started = time.perf_counter()
            probabilities = predict_probabilities(model, images, params.batch_size, views)
            seconds = time.perf_counter() - started
        predicted = probabilities.argmax(axis=1)
        rows.append(
            {
                "views": views,
                "accuracy": float((predicted == labels).mean()),
                "errors": int((predicted != labels).sum()),
                "loss": cross_entropy(probabilities, labels),
                "ece": reliability(probabilities, labels, params.calibration_bins)[1],
                "images_per_second": len(labels) / seconds,
            }
        )
        print(
            f"{views} views: {rows[-1]['accuracy']:.2%} ({rows[-1]['errors']} errors), "
            f"{rows[-1]['images_per_second']:,.0f} images/s",
            flush=True,
        )

    header = (
        f"{args.split} split, {len(labels):,} images, model {args.model.name}; {machine_description()}, {date.today()}"
    )
    table = [header, "", "| views | accuracy | errors | loss | ECE | images/s |", "|---|---|---|---|---|---|"]
    table += [
        f"| {row['views']} | {row['accuracy']:.2%} | {row['errors']} | {row['loss']:.4f} | {row['ece']:.4f} "
        f"| {row['images_per_second']:,.0f} |"
        for row in rows
    ]
    print("\n".join(table))
    args.output.write_text(
        json.dumps(
            {"split": args.split, "machine": machine_description(), "date": str(date.today()), "rows": rows}, indent=2
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
