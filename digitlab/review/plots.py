"""The report's plots: both versions' curves, per-class bars, reliability and confusion side by side, and
pictures of the test images that a change fixed and broke.

Drawn with Matplotlib from the plot data that DVC's own `dvc plots diff` uses, read from git: no browser.
"""

import csv
import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from digitlab.comparison.revisions import Run
from digitlab.evaluation.scores import confusion_matrix
from digitlab.figures import draw_digit, grouped_bars, save
from digitlab.review.outputs import written_by

SPLITS = {"train": "train", "eval": "validation"}
# Inside the folders dvclive writes (train's and evaluate's `plots` outputs in dvc.yaml): dvclive's own layout.
CURVE = "metrics/{split}/{metric}.tsv"
CONFUSION = "sklearn/confusion_matrix.json"


def read_tsv(text: str) -> tuple[list[int], list[float]]:
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    metric = [name for name in rows[0] if name not in ("step", "timestamp")][0]
    return [int(row["step"]) for row in rows], [float(row[metric]) for row in rows]


def compare_lines(
    series: dict[str, tuple[list, list]],
    path,
    title: str,
    xlabel: str,
    ylabel: str,
    dashed: str = "",
    diagonal: bool = False,
) -> None:
    """One line per labelled series of (x, y), e.g. "main: validation"; labels starting with `dashed` dashed."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, (x, y) in series.items():
        linestyle = "--" if dashed and label.startswith(dashed) else "-"
        axis.plot(x, y, marker="o", markersize=3, label=label, linestyle=linestyle)
    if diagonal:
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="perfect calibration")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save(figure, path)


def compare_bars(values: dict[str, list[float]], categories: list[str], path, title: str, ylabel: str) -> None:
    """Grouped bars: one group per category, one bar per labelled revision."""
    figure, axis = plt.subplots(figsize=(8, 4))
    grouped_bars(axis, values)
    axis.set_xticks(range(len(categories)), categories)
    low = min(min(heights) for heights in values.values())
    axis.set_ylim(max(0.0, low - (1 - low) * 0.5 - 0.001), 1.0)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8)
    save(figure, path)


def compare_confusions(matrices: dict[str, np.ndarray], path) -> None:
    """Confusion matrices of several revisions side by side, diagonal hidden so the errors stand out."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(6 * len(matrices), 5.5), squeeze=False)
    for axis, (label, matrix) in zip(axes.flat, matrices.items()):
        errors = matrix.copy()
        np.fill_diagonal(errors, 0)
        sns.heatmap(errors, annot=True, fmt="d", cmap="Reds", cbar=False, ax=axis, square=True)
        axis.set_xlabel("predicted digit")
        axis.set_ylabel("true digit")
        axis.set_title(f"{label}: {int(errors.sum())} errors (diagonal hidden)")
    save(figure, path)


def draw_plots(runs: dict[str, Run], output: Path) -> list[tuple[str, str]]:
    """Draw every comparison plot for which some revision has data; return (title, file name) pairs.

    The first run is the reference: its lines are dashed.
    """
    drawn, reference = [], next(iter(runs))
    curves = written_by("train", "plots")
    for metric in ("accuracy", "loss"):
        series = {}
        for label, run in runs.items():
            for split, name in SPLITS.items():
                text = run.read(f"{curves}/{CURVE.format(split=split, metric=metric)}")
                if text:
                    series[f"{label}: {name}"] = read_tsv(text)
        if series:
            compare_lines(
                series, output / f"{metric}.png", f"{metric.capitalize()} per epoch", "epoch", metric, dashed=reference
            )
            drawn.append((f"{metric.capitalize()} per epoch", f"{metric}.png"))

    per_class_file = written_by("evaluate", "per_class.json")
    per_class = {label: rows for label, run in runs.items() if (rows := run.read_json(per_class_file))}
    if per_class:
        digits = [row["digit"] for row in next(iter(per_class.values()))]
        compare_bars(
            {label: [row["f1"] for row in rows] for label, rows in per_class.items()},
            digits,
            output / "per_class_f1.png",
            "Per-class F1 on the test set",
            "F1",
        )
        drawn.append(("Per-class F1", "per_class_f1.png"))

    calibration_file = written_by("evaluate", "calibration.json")
    calibration = {label: rows for label, run in runs.items() if (rows := run.read_json(calibration_file))}
    if calibration:
        compare_lines(
            {
                label: ([r["confidence"] for r in rows], [r["accuracy"] for r in rows])
                for label, rows in calibration.items()
            },
            output / "reliability.png",
            "Reliability diagram (test)",
            "mean confidence in the bin",
            "accuracy in the bin",
            dashed=reference,
            diagonal=True,
        )
        drawn.append(("Reliability diagram", "reliability.png"))

    matrices = {}
    confusion_file = f"{written_by('evaluate', 'plots')}/{CONFUSION}"
    for label, run in runs.items():
        if pairs := run.read_json(confusion_file):
            matrices[label] = confusion_matrix(
                np.array([int(p["actual"]) for p in pairs]), np.array([int(p["predicted"]) for p in pairs])
            )
    if matrices:
        compare_confusions(matrices, output / "confusion.png")
        drawn.append(("Confusion matrices", "confusion.png"))
    return drawn


# At most this many images in one picture of changed images; the rest are counted in its title.
MAX_PICTURES = 40
COLUMNS = 8


def draw_changes(images: np.ndarray, changes: list[tuple[int, str, bool]], path: Path, title: str) -> None:
    """The test images that changed between two versions, each (index, caption, broken): broken ones in red."""
    shown = changes[:MAX_PICTURES]
    if len(changes) > len(shown):
        title += f" (the first {len(shown)} of {len(changes)})"
    columns = min(COLUMNS, len(shown))
    rows = -(-len(shown) // columns)
    # Wide enough for the title, however few images.
    figure, axes = plt.subplots(
        rows, columns, figsize=(max(1.7 * columns, 7), 2.0 * rows + 0.5), squeeze=False, layout="constrained"
    )
    for axis in axes.flat:
        axis.axis("off")
    for axis, (index, caption, broken) in zip(axes.flat, shown):
        draw_digit(axis, images[index], caption, broken)
    figure.suptitle(title)
    save(figure, path)
