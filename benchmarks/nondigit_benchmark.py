"""Benchmark: how well can "not a digit" be told from a digit? Scores compared on validation data only.

Non-digits: digitlab.images.nondigits' validation split, through the reader's preprocessing (those it finds
blank counted apart); digits: data/prepared/val.npz, and its first --users as users' images (predict_benchmark's).
Scores (higher: "more like a digit"), 1 view and 5 averaged: msp, energy, max_logit, mahalanobis (fitted on --fit
training images); each with its AUROC and the non-digits and user digits it rejects where it rejects 0.2% and 0.5%
of the validation digits. --outlier-exposure also trains and scores two models side by side, on digits alone and
with non-digits given a uniform target. --training-cost EPOCHS only times train's loop without and with them.

Usage: python benchmarks/nondigit_benchmark.py [--model data/model/model.keras] [--nondigits 1400]
                                               [--outlier-exposure --epochs 3]
       python benchmarks/nondigit_benchmark.py --training-cost 2
       python benchmarks/nondigit_benchmark.py --training-cost 2 --against train.augment.shear=0
Prints Markdown tables and writes --output (JSON).
"""

import argparse
import time
from datetime import date
from pathlib import Path

from digitlab.shared.params import Params, load_params, with_overrides
from digitlab.shared.tta import VIEWS

import keras
import numpy as np
import yaml
from benchmark import machine_description  # benchmarks/benchmark.py, beside this script
from predict_benchmark import user_image

from digitlab.files.arrays import load_arrays
from digitlab.files.atomic import write_json
from digitlab.images.mnist_look import prepare, to_model_input
from digitlab.images.nondigits import KINDS, prepared_nondigits
from digitlab.inference.views import shifted
from digitlab.training.model import build_model

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FALSE_REJECTIONS = (0.002, 0.005)  # shares of MNIST validation digits a threshold may reject
FEATURES = "dropout"  # the dense layer's activations (dropout is the identity at inference)


def user_digits(images: np.ndarray, count: int) -> np.ndarray:
    """The first `count` MNIST images as users' images (predict_benchmark's), read back by the reader."""
    rng = np.random.default_rng(0)
    pixels = np.round(images[:count, ..., 0] * 255).astype(np.uint8)
    read = [prepare(user_image(digit, rng, index % 2 == 0)[0]) for index, digit in enumerate(pixels)]
    return to_model_input(np.stack([digit if digit is not None else np.zeros((28, 28), np.uint8) for digit in read]))


class Scorer:
    """The scores of one Keras model: its features, logits, and Mahalanobis statistics fitted on training images."""

    def __init__(self, model: keras.Model, train_images: np.ndarray, train_labels: np.ndarray):
        self.features = keras.Model(model.inputs, model.get_layer(FEATURES).output)
        self.kernel, self.bias = model.get_layer("digit").get_weights()
        features = self.features.predict(train_images, batch_size=500, verbose=0)
        self.means = np.stack([features[train_labels == c].mean(axis=0) for c in range(10)])
        centred = features - self.means[train_labels]
        covariance = centred.T @ centred / len(features)
        self.precision = np.linalg.pinv(
            covariance + 1e-6 * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
        )

    def scores(self, images: np.ndarray) -> dict[str, np.ndarray]:
        by_view = [self._one_view(shifted(images, down, right)) for down, right in VIEWS[5]]
        return {
            **{f"{name}, 1 view": value for name, value in by_view[0].items()},
            **{f"{name}, 5 views": np.mean([view[name] for view in by_view], axis=0) for name in by_view[0]},
        }

    def _one_view(self, images: np.ndarray) -> dict[str, np.ndarray]:
        features = self.features.predict(images, batch_size=500, verbose=0)
        logits = features @ self.kernel + self.bias
        top = logits.max(axis=1, keepdims=True)
        log_sum_exp = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        centred = features[:, None, :] - self.means[None]
        distances = np.einsum("nci,ij,ncj->nc", centred, self.precision, centred)
        return {
            "msp": np.exp(top[:, 0] - log_sum_exp),
            "energy": log_sum_exp,
            "max_logit": top[:, 0],
            "mahalanobis": -distances.min(axis=1),
        }


def auroc(digits: np.ndarray, others: np.ndarray) -> float:
    """The chance that a random digit scores above a random non-digit, a tie counting half (Mann-Whitney U)."""
    others = np.sort(others)
    below, not_above = np.searchsorted(others, digits, "left"), np.searchsorted(others, digits, "right")
    return float((below + not_above).sum() / 2 / (len(digits) * len(others)))


def compare(scorer: Scorer, val: np.ndarray, nondigits: np.ndarray, kinds: np.ndarray, users: np.ndarray) -> dict:
    on_val, on_nondigits, on_users = scorer.scores(val), scorer.scores(nondigits), scorer.scores(users)
    results = {}
    for name in on_val:
        row = {"auroc": round(auroc(on_val[name], on_nondigits[name]), 4)}
        for share in FALSE_REJECTIONS:
            threshold = np.quantile(on_val[name], share)  # chosen on MNIST validation digits only
            rejected = on_nondigits[name] < threshold
            row[f"at {share:.1%}"] = {
                "nondigits_rejected": round(float(rejected.mean()), 4),
                "user_digits_rejected": round(float((on_users[name] < threshold).mean()), 4),
                "by_kind": {kind: round(float(rejected[kinds == kind].mean()), 3) for kind in KINDS},
            }
        results[name] = row
    return results


def train_probe(
    train: dict, val: dict, epochs: int, seed: int, outliers: np.ndarray | None
) -> tuple[keras.Model, float, float]:
    """The default CNN, Adam at 1e-3, batches of 128: on digits, and if `outliers`, on them with a uniform target."""
    keras.utils.set_random_seed(seed)
    images, targets = train["images"], np.eye(10, dtype=np.float32)[train["labels"]]
    if outliers is not None:
        images = np.concatenate([images, outliers])
        targets = np.concatenate([targets, np.full((len(outliers), 10), 0.1, np.float32)])
    model = build_model(load_params(PROJECT_ROOT / "params.yaml").model, for_training=True)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    started = time.perf_counter()
    model.fit(images, targets, batch_size=128, epochs=epochs, shuffle=True, verbose=2)
    seconds = time.perf_counter() - started
    accuracy = float((model.predict(val["images"], batch_size=500, verbose=0).argmax(1) == val["labels"]).mean())
    return model, seconds, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PROJECT_ROOT / "data/model/model.keras")
    parser.add_argument("--prepared", type=Path, default=PROJECT_ROOT / "data/prepared")
    parser.add_argument("--nondigits", type=int, default=1400, help="non-digits of the validation split")
    parser.add_argument("--users", type=int, default=1000, help="user-style digits")
    parser.add_argument(
        "--fit", type=int, default=20000, help="training images the Mahalanobis statistics are fitted on"
    )
    parser.add_argument("--outlier-exposure", action="store_true", help="also train two models and compare them")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--oe-share", type=float, default=0.1)
    parser.add_argument(
        "--output",
        type=Path,
        help="default: benchmarks/nondigit_results.json, "
        "or with --training-cost benchmarks/nondigit_training_cost.json",
    )
    parser.add_argument("--training-cost", type=int, metavar="EPOCHS", help="only time training without and with")
    parser.add_argument(
        "--against",
        action="append",
        metavar="KEY=VALUE",
        help="with --training-cost: time params.yaml against itself so changed (repeatable)",
    )
    args = parser.parse_args()
    if args.training_cost:
        training_cost(
            args.prepared,
            args.training_cost,
            args.against,
            args.output or PROJECT_ROOT / "benchmarks/nondigit_training_cost.json",
        )
        return

    train, val = load_arrays(args.prepared / "train.npz"), load_arrays(args.prepared / "val.npz")
    fit_rows = np.random.default_rng(0).choice(len(train["labels"]), args.fit, replace=False)
    started = time.perf_counter()
    made, blank = prepared_nondigits(args.nondigits, 0, "val")
    nondigits, kinds = made["images"], made["kinds"]
    users = user_digits(val["images"], args.users)
    print(
        f"made {args.nondigits} non-digits ({blank} found blank by the reader) and {args.users} user-style "
        f"digits in {time.perf_counter() - started:.0f} s",
        flush=True,
    )

    def scored(model: keras.Model) -> dict:
        scorer = Scorer(model, train["images"][fit_rows], train["labels"][fit_rows])
        return compare(scorer, val["images"], nondigits, kinds, users)

    results = {
        "date": date.today().isoformat(),
        "machine": machine_description(),
        "nondigits": {"count": args.nondigits, "found_blank": blank},
        "user_digits": args.users,
        "models": {
            str(args.model.relative_to(PROJECT_ROOT) if args.model.is_relative_to(PROJECT_ROOT) else args.model): {
                "scores": scored(keras.saving.load_model(args.model))
            }
        },
    }
    if args.outlier_exposure:
        outlier_count = int(args.oe_share * len(train["labels"]))
        outliers = prepared_nondigits(outlier_count, 0, "train")[0]["images"]
        for name, extra in (("digits only", None), (f"outlier exposure ({len(outliers):,} non-digits)", outliers)):
            model, seconds, accuracy = train_probe(train, val, args.epochs, 42, extra)
            results["models"][f"probe, {args.epochs} epochs, {name}"] = {
                "train_seconds": round(seconds, 1),
                "val_accuracy": round(accuracy, 4),
                "scores": scored(model),
            }
    write_json(args.output or PROJECT_ROOT / "benchmarks/nondigit_results.json", results)
    print(markdown(results))


def training_cost(prepared: Path, epochs: int, against: list[str] | None, output: Path) -> None:
    """Time the train stage's loop without and with its non-digits, in turn (ABAB), and print the ratios:
    of the whole runs, and of their fastest epochs after the first (which also traces the graphs). A shared
    machine's epochs swing from one to the next whatever runs, so the fastest epoch, the least disturbed,
    says more about the cost than the sum. With `against` (KEY=VALUE overrides of params.yaml, as
    `dvc exp run -S` takes them), both sides train with the non-digits, the first with params.yaml so
    overridden ("before"), the second with params.yaml as it is."""
    from digitlab.training.fitting import fit

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(round(time.perf_counter() - self.started, 2))

    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params = Params.model_validate(with_overrides(raw, {"train.epochs": epochs}))
    train, val = load_arrays(prepared / "train.npz"), load_arrays(prepared / "val.npz")
    outliers = load_arrays(prepared / "nondigits_train.npz")["images"]
    if against:
        changes = dict(change.split("=", 1) for change in against)
        before = Params.model_validate(
            with_overrides(
                raw, {"train.epochs": epochs, **{key: yaml.safe_load(value) for key, value in changes.items()}}
            )
        )
        sides = {f"before ({', '.join(against)})": (before, outliers), "params.yaml": (params, outliers)}
    else:
        sides = {"digits only": (params, None), f"with {len(outliers):,} non-digits": (params, outliers)}
    runs = {name: [] for name in sides}
    for _ in range(2):
        for name, (side_params, extra) in sides.items():
            timer = EpochTimes()
            timer.seconds = []
            started = time.perf_counter()
            fit(side_params, train, val, callbacks=[timer], outliers=extra)
            runs[name].append({"seconds": round(time.perf_counter() - started, 1), "epochs": timer.seconds})
    (plain, exposed) = runs.values()
    fastest = [min(second for run in side for second in run["epochs"][1:]) for side in (plain, exposed)]
    results = {
        "date": date.today().isoformat(),
        "machine": machine_description(),
        "epochs": epochs,
        "runs": runs,
        "images_per_epoch": {
            "digits only": len(train["labels"]),
            "with non-digits": len(train["labels"]) + len(outliers),
        },
        "against": against or [],
        "ratio_of_runs": round(sum(r["seconds"] for r in exposed) / sum(r["seconds"] for r in plain), 3),
        "ratio_of_fastest_epochs": round(fastest[1] / fastest[0], 3),
    }
    write_json(output, results)
    print(
        f"{results['machine']}; {epochs} epochs of fit, in turn: "
        + "; ".join(
            f"{name}: runs {[run['seconds'] for run in side]} s, epochs {[run['epochs'] for run in side]} s"
            for name, side in runs.items()
        )
    )
    print(
        f"ratio second/first: whole runs {results['ratio_of_runs']}, "
        f"fastest epochs {results['ratio_of_fastest_epochs']}"
        f"; images per epoch {len(train['labels']) + len(outliers):,} / {len(train['labels']):,}"
    )


def markdown(results: dict) -> str:
    lines = [
        f"{results['machine']}; {results['date']}; {results['nondigits']['count']:,} non-digits "
        f"({results['nondigits']['found_blank']} found blank, not counted), "
        f"{results['user_digits']:,} user-style digits"
    ]
    for model, row in results["models"].items():
        extra = (
            f" (training {row['train_seconds']} s, validation accuracy {row['val_accuracy']:.2%})"
            if "train_seconds" in row
            else ""
        )
        lines += [
            "",
            f"**{model}**{extra}",
            "",
            "| score | AUROC | non-digits rejected at 0.2% / 0.5% of digits | user-style digits rejected |",
            "|---|---|---|---|",
        ]
        for name, score in row["scores"].items():
            low, high = score["at 0.2%"], score["at 0.5%"]
            lines.append(
                f"| {name} | {score['auroc']:.4f} | {low['nondigits_rejected']:.1%} / "
                f"{high['nondigits_rejected']:.1%} | {low['user_digits_rejected']:.1%} / "
                f"{high['user_digits_rejected']:.1%} |"
            )
        best = max(row["scores"], key=lambda name: row["scores"][name]["at 0.5%"]["nondigits_rejected"])
        lines.append(
            f"\nBy kind, {best}, at 0.5%: "
            + ", ".join(f"{kind} {share:.0%}" for kind, share in row["scores"][best]["at 0.5%"]["by_kind"].items())
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
