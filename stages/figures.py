"""Drawing the pipeline's figures: image grids, the class distribution, the confusion heatmap.

Every figure is saved atomically as PNG with fixed metadata, so that the same data
gives byte-identical files and DVC sees no change where there is none.
"""

import math
import os

import matplotlib

matplotlib.use("Agg")  # no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from stages.atomic import atomic_path  # noqa: E402

DPI = 100
WRONG = "tab:red"


def save(figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as temporary:
        # No Software/date metadata: the bytes depend on the data alone.
        figure.savefig(temporary, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    print(f"  wrote {path}")


def image_grid(images: np.ndarray, titles: list[str], path, suptitle: str, wrong: list[bool] | None = None) -> None:
    """Draw 28x28 images in a square-ish grid, each with its title; titles of `wrong` ones in red."""
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.7 * rows + 0.4), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(images):
            continue
        axis.imshow(images[index].squeeze(), cmap="gray_r", vmin=0, vmax=images.max() or 1)
        is_wrong = wrong is not None and wrong[index]
        axis.set_title(titles[index], fontsize=8, color=WRONG if is_wrong else "black")
        if is_wrong:
            axis.add_patch(plt.Rectangle((-0.5, -0.5), 28, 28, fill=False, edgecolor=WRONG, linewidth=3))
    figure.suptitle(suptitle)
    save(figure, path)


def grouped_bars(axis, values: dict[str, list[float]]) -> None:
    """One group of bars per category (0, 1, 2, ...), one bar in each group per labelled series."""
    width = 0.8 / len(values)
    for offset, (label, heights) in enumerate(values.items()):
        positions = np.arange(len(heights)) + offset * width - 0.4 + width / 2
        axis.bar(positions, heights, width=width, label=label)


def class_distribution(counts: dict[str, list[int]], path) -> None:
    """Bar chart of images per class, one group of bars per split."""
    figure, axis = plt.subplots(figsize=(8, 4))
    grouped_bars(axis, {f"{split} ({sum(per_class):,})": per_class for split, per_class in counts.items()})
    axis.set_xticks(range(len(next(iter(counts.values())))))
    axis.set_xlabel("digit")
    axis.set_ylabel("images")
    axis.set_title("Class distribution")
    axis.legend()
    save(figure, path)


def confusion_heatmap(matrix: np.ndarray, path) -> None:
    """Seaborn heatmap of a confusion matrix: rows are true digits, columns predicted."""
    figure, axis = plt.subplots(figsize=(8, 7))
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=axis, square=True)
    axis.set_xlabel("predicted digit")
    axis.set_ylabel("true digit")
    axis.set_title(f"Confusion matrix on the test set ({int(matrix.sum() - np.trace(matrix))} errors)")
    save(figure, path)


def compare_lines(series: dict[str, tuple[list, list]], path, title: str, xlabel: str, ylabel: str,
                  dashed: str = "", diagonal: bool = False) -> None:
    """One line per labelled series of (x, y), e.g. "main: validation"; labels starting with `dashed` dashed."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, (x, y) in series.items():
        axis.plot(x, y, marker="o", markersize=3, label=label, linestyle="--" if dashed and label.startswith(dashed) else "-")
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
