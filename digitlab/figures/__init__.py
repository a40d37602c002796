"""Drawing the stages' figures: image grids, the class distribution, the confusion heatmap. This
__init__.py is the folder's one module.

The comparison plots of the pull-request report live apart, in digitlab/review/plots.py.

Every figure is saved atomically as PNG with fixed metadata, so that the same data
gives byte-identical files and DVC sees no change where there is none.
"""

import math
import os

from digitlab.shared.mnist import IMAGE_SIZE

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from digitlab.files.atomic import atomic_path

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
        draw_digit(axis, images[index], titles[index], wrong is not None and wrong[index], images.max() or 1)
    figure.suptitle(suptitle)
    save(figure, path)


def draw_digit(axis, image: np.ndarray, title: str, wrong: bool, brightest: float = 1) -> None:
    """One image in a grid, titled; a wrong one framed and titled in red."""
    axis.imshow(image.squeeze(), cmap="gray_r", vmin=0, vmax=brightest)
    axis.set_title(title, fontsize=8, color=WRONG if wrong else "black")
    if wrong:
        axis.add_patch(plt.Rectangle((-0.5, -0.5), IMAGE_SIZE, IMAGE_SIZE, fill=False, edgecolor=WRONG, linewidth=3))


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
