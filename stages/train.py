"""Stage 4, train: fit the CNN described in params.yaml on the training split, chosen on validation only.

The training non-digits are mixed into the batches with a flat target. After training, the "not a digit"
threshold of each view count is chosen on the validation digits and written into model.onnx, and the shares
it refuses on validation (digits, user-style digits, non-digits) are metrics: choose `reject.*` and
`train.augment.*` by them, never by the test set. The stage stops if model.onnx does not answer the
validation images as model.keras does.

Writes MODEL_PATH and model.onnx beside it, and into REPORT_DIR metrics.json, plots/metrics/ (dvclive's
per-epoch curves), model_summary.txt and speed.json (a timing, apart from the metrics). With
train.distribute multi_worker every machine runs this command with its own TF_CONFIG; only the chief writes.

Usage: python -m stages.train PREPARED_DIR MODEL_PATH REPORT_DIR
"""

import time
from pathlib import Path

from digitlab.shared.command import stage_paths
from digitlab.shared.errors import run_command
from digitlab.shared.params import load_params
from digitlab.shared.tta import DEFAULT_VIEWS, VIEWS

import keras
import numpy as np
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from digitlab.files.arrays import fingerprint, load_arrays
from digitlab.files.atomic import write_json, write_text
from digitlab.inference.rejection import choose_threshold, confidences, rejected, thresholds_metadata
from digitlab.inference.rounding import share
from digitlab.inference.views import PREDICT_BATCH, predict_probabilities
from digitlab.training import distribute, fitting
from digitlab.training.saving import check_export, export_onnx, save_model


class LogParameterCount(keras.callbacks.Callback):
    """Logs the parameter count with the metrics, before the optimizer adds its own variables."""

    def __init__(self, live: Live):
        super().__init__()
        self.live = live

    def on_train_begin(self, logs=None):
        self.live.log_metric("model/params", self.model.count_params(), plot=False)


def summary(model: keras.Model) -> str:
    """Keras's table of the saved model's layers (not those of training: see fitting.plain_copy)."""
    lines = []
    model.summary(print_fn=lambda text, **_: lines.append(text))
    return "\n".join(lines) + "\n"


def onnx_path(model_path: Path) -> Path:
    """Where the ONNX export goes: beside the .keras file, `model.keras` -> `model.onnx`."""
    return Path(model_path).with_suffix(".onnx")


def confidence_at(model: keras.Model, images: np.ndarray, views: int) -> np.ndarray:
    """The model's confidence in each image, its largest probability averaged over `views` views."""
    return confidences(predict_probabilities(model, images, PREDICT_BATCH, views))


def validation_confidences(model: keras.Model, images: np.ndarray) -> dict[int, np.ndarray]:
    """The model's confidence in each image, for each number of views."""
    return {views: confidence_at(model, images, views) for views in VIEWS}


def main(argv: list[str] | None = None) -> None:
    args = stage_paths(__doc__, ["prepared_dir", "model_path", "report_dir"], argv)
    params = load_params()
    chief = distribute.is_chief(params.train.distribute)

    train = load_arrays(args.prepared_dir / "train.npz")
    val = load_arrays(args.prepared_dir / "val.npz")
    outliers = load_arrays(args.prepared_dir / "nondigits_train.npz")["images"]
    if not chief:
        model = fitting.fit(params, train, val, outliers=outliers)
        print(f"train: done, weights {fingerprint(*model.get_weights())}; the chief writes the model and reports")
        return
    started = time.perf_counter()
    with Live(str(args.report_dir), dvcyaml=None, save_dvc_exp=False) as live:
        model = fitting.fit(
            params, train, val, callbacks=[LogParameterCount(live), DVCLiveCallback(live=live)], outliers=outliers
        )
        seconds = time.perf_counter() - started
        # The training split's figures stay in the curves (plots/metrics/train/), not in the metrics: they are
        # measured on augmented batches while the weights move, and the validation figures are what to compare.
        live.summary.pop("train", None)

        # "Not a digit": a threshold for each number of views, then what it refuses on validation.
        digit_confidence = validation_confidences(model, val["images"])
        thresholds = {
            views: choose_threshold(confidence, params.reject.false_rejection)
            for views, confidence in digit_confidence.items()
        }
        nondigits = load_arrays(args.prepared_dir / "nondigits_val.npz")
        users = load_arrays(args.prepared_dir / "user_digits_val.npz")
        threshold = thresholds[DEFAULT_VIEWS]
        nondigits_refused = rejected(confidence_at(model, nondigits["images"], DEFAULT_VIEWS), threshold)
        drawn_refused = nondigits_refused[nondigits["hands"] != ""]
        digits_refused = rejected(digit_confidence[DEFAULT_VIEWS], threshold)
        users_refused = rejected(confidence_at(model, users["images"], DEFAULT_VIEWS), threshold)
        live.log_metric("reject/val_nondigits", share(nondigits_refused.mean()), plot=False)
        live.log_metric("reject/val_drawn_nondigits", share(drawn_refused.mean()), plot=False)
        live.log_metric("reject/val_digits", share(digits_refused.mean()), plot=False)
        live.log_metric("reject/val_user_digits", share(users_refused.mean()), plot=False)
    print(
        'train: "not a digit" below a confidence of '
        + ", ".join(
            f"{threshold:.2%} ({views} view{'s' if views > 1 else ''})" for views, threshold in thresholds.items()
        )
        + f"; at {DEFAULT_VIEWS} views it refuses {nondigits_refused.mean():.1%} of {len(nondigits_refused):,} "
        f"validation non-digits ({drawn_refused.mean():.1%} of those drawn by hands training never saw), "
        f"{digits_refused.mean():.2%} of the validation digits and {users_refused.mean():.2%} of them redrawn as "
        f"users send them",
        flush=True,
    )

    save_model(model, args.model_path)
    write_text(args.report_dir / "model_summary.txt", summary(model))
    export_onnx(model, onnx_path(args.model_path), metadata=thresholds_metadata(thresholds))
    difference = check_export(model, onnx_path(args.model_path), val["images"])
    print(
        f"train: model.onnx answers the {len(val['labels']):,} validation images as model.keras does, "
        f"probabilities within {difference:.2g}",
        flush=True,
    )
    # Timings differ from run to run, so they live apart from the reproducible metrics.json.
    images_per_second = params.train.epochs * (len(train["labels"]) + len(outliers)) / seconds
    write_json(
        args.report_dir / "speed.json",
        {"train": {"seconds": round(seconds, 1), "images_per_second": round(images_per_second)}},
    )
    weights = fingerprint(*model.get_weights())
    print(
        f"train: model in {args.model_path} and {onnx_path(args.model_path)} (weights {weights}), "
        f"curves and metrics in {args.report_dir}/"
    )


if __name__ == "__main__":
    run_command(main)
