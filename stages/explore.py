"""Stage 2, explore: look at the raw data before doing anything to it.

Writes into OUTPUT_DIR:
  examples.png      the first training image of each digit 0-9
  samples.png       `explore.sample_count` random training images with their labels
  distribution.png  images per class in train and test
  stats.json        counts per class, pixel mean and std of each split

Usage: python -m stages.explore RAW_DIR OUTPUT_DIR
"""

from digitlab.shared.command import stage_paths
from digitlab.shared.errors import run_command
from digitlab.shared.mnist import CLASSES
from digitlab.shared.params import load_params

import numpy as np

from digitlab import figures
from digitlab.files.atomic import write_json
from digitlab.raw.splits import load_split


def main(argv: list[str] | None = None) -> None:
    args = stage_paths(__doc__, ["raw_dir", "output_dir"], argv)
    params = load_params().explore

    splits = {split: load_split(args.raw_dir, split) for split in ("train", "test")}
    train_images, train_labels = splits["train"]

    first_of_each = [int(np.flatnonzero(train_labels == digit)[0]) for digit in CLASSES]
    figures.image_grid(
        train_images[first_of_each],
        [f"label {d}" for d in CLASSES],
        args.output_dir / "examples.png",
        "One training image of each digit",
    )

    rng = np.random.default_rng(params.seed)
    chosen = rng.choice(len(train_images), size=min(params.sample_count, len(train_images)), replace=False)
    figures.image_grid(
        train_images[chosen],
        [f"#{i}: {train_labels[i]}" for i in chosen],
        args.output_dir / "samples.png",
        "Random training images with their labels",
    )

    counts = {split: np.bincount(labels, minlength=len(CLASSES)).tolist() for split, (_, labels) in splits.items()}
    figures.class_distribution(counts, args.output_dir / "distribution.png")

    stats = {
        split: {
            "images": len(images),
            "shape": list(images.shape[1:]),
            "per_class": dict(zip(map(str, CLASSES), counts[split])),
            "pixel_mean": round(float(images.mean() / 255), 6),
            "pixel_std": round(float(images.std() / 255), 6),
        }
        for split, (images, _) in splits.items()
    }
    write_json(args.output_dir / "stats.json", stats)
    print(f"explore: figures and stats.json in {args.output_dir}/")


if __name__ == "__main__":
    run_command(main)
