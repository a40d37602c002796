"""Stage 3, preprocess: turn the raw images into model input and carve out a validation split.

Pixels become float32 in [0, 1], (N, 28, 28, 1); validation takes the same fraction of every class
(stratified); the test set is converted but otherwise untouched. It also makes images that hold no digit
(digitlab/images/nondigits.py) for training, validation and test, and validation and test digits redrawn as
users send them (digitlab/images/user_digits.py), all read as the reader reads users' images.

Writes OUTPUT_DIR/{train,val,test}.npz (`images`, `labels`), nondigits_{train,val,test}.npz (`images`,
`kinds`) and user_digits_{val,test}.npz (`images`, `labels`, `looks`).

Usage: python -m stages.preprocess RAW_DIR OUTPUT_DIR
"""

from digitlab.shared.command import stage_paths
from digitlab.shared.errors import UserError, run_command
from digitlab.shared.params import load_params

import numpy as np

from digitlab.files.arrays import save_arrays
from digitlab.images.mnist_look import to_model_input
from digitlab.images.nondigits import prepared_nondigits, split_seeds
from digitlab.images.user_digits import user_digits
from digitlab.raw.splits import load_split


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (kept, held_out) index arrays; each class gives round(fraction * its count) to held_out.

    Every class with two or more images keeps at least one on each side.
    """
    rng = np.random.default_rng(seed)
    kept, held_out = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(fraction * len(members)))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held_out.append(members[:count])
        kept.append(members[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held_out))


def main(argv: list[str] | None = None) -> None:
    args = stage_paths(__doc__, ["raw_dir", "output_dir"], argv)
    all_params = load_params()
    params = all_params.data

    images, labels = load_split(args.raw_dir, "train")
    if params.max_train_samples is not None and params.max_train_samples < len(labels):
        # A stratified subset keeps the class balance of the full set.
        _, subset = stratified_split(labels, params.max_train_samples / len(labels), params.split_seed)
        images, labels = images[subset], labels[subset]

    train, val = stratified_split(labels, params.validation_fraction, params.split_seed)
    if len(train) == 0 or len(val) == 0:
        raise UserError(
            f"data.validation_fraction={params.validation_fraction} leaves an empty split of "
            f"{len(labels)} images; choose a fraction between 0.05 and 0.5"
        )
    test_images, test_labels = load_split(args.raw_dir, "test")

    for name, (x, y) in {
        "train": (images[train], labels[train]),
        "val": (images[val], labels[val]),
        "test": (test_images, test_labels),
    }.items():
        save_arrays(args.output_dir / f"{name}.npz", images=to_model_input(x), labels=y)
        print(f"  wrote {args.output_dir / name}.npz: {len(y):,} images", flush=True)

    reject = all_params.reject
    for split, count in {
        "train": round(reject.outlier_share * len(train)),
        "val": reject.val_nondigits,
        "test": reject.test_nondigits,
    }.items():
        nondigits, blank = prepared_nondigits(count, reject.seed, split)
        save_arrays(args.output_dir / f"nondigits_{split}.npz", **nondigits)
        print(
            f"  wrote {args.output_dir}/nondigits_{split}.npz: {len(nondigits['kinds']):,} non-digits "
            f"(of {count:,} made; {blank} the reader finds blank are left out)",
            flush=True,
        )
    # Validation and test digits as users send them: what "not a digit" must not refuse (validation: to choose by;
    # test: read once, by evaluate).
    seeds = split_seeds(reject.seed)
    for split, (x, y) in {
        "val": (images[val][: reject.val_user_digits], labels[val][: reject.val_user_digits]),
        "test": (test_images[: reject.test_user_digits], test_labels[: reject.test_user_digits]),
    }.items():
        digits, blank = user_digits(x, y, seeds[split])
        save_arrays(args.output_dir / f"user_digits_{split}.npz", **digits)
        print(
            f"  wrote {args.output_dir}/user_digits_{split}.npz: {len(digits['labels']):,} {split} digits in users' "
            f"hands and looks ({blank} the reader finds blank are left out)",
            flush=True,
        )
    print(f"preprocess: arrays in {args.output_dir}/")


if __name__ == "__main__":
    run_command(main)
