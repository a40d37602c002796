"""Stage 5, evaluate: measure the trained model, once, on the 10,000 test images.

The model scored is MODEL_PATH, the ONNX export (model.onnx, run by onnxruntime: the model users
run; train checked that it answers as model.keras does), so no TensorFlow is imported. It also reads
the test split of the non-digits (nondigits_test.npz) once, and measures the "not a digit" answer at
the threshold model.onnx carries for evaluate.tta_views (digitlab/inference/rejection.py).

Writes into REPORT_DIR:
  metrics.json                     test.accuracy, test.errors, test.loss, test.macro_f1, test.ece,
                                   test.accepted_accuracy (on the digits not refused); reject.threshold,
                                   reject.auroc (digits against non-digits, by confidence), reject.nondigits
                                   and reject.digits (the shares of each refused as "not a digit"),
                                   reject.drawn_nondigits (of the non-digits drawn as strokes, by hands training
                                   never saw) and reject.user_digits (of the test digits redrawn as users send them);
                                   robust.mean_accuracy and robust.worst_accuracy, under MNIST-C's corruptions
  rejection.json                   the same counts, the user digits read right, and the non-digits refused by kind
                                   (letters, doodles, noise...) and by the hand that drew them
  answers.json                     image by image, the test digits misread or refused and the test non-digits
                                   accepted, with their answers (digitlab/evaluation/answers.py): what the review
                                   pairs with another version's
  per_class.json                   precision, recall, F1 and support of each digit (rows, for DVC's bar plots)
  calibration.json                 mean confidence and accuracy per confidence bin (reliability diagram)
  corruptions.json                 the accuracy under each of MNIST-C's 15 corruptions (Mu and Gilmer 2019) of
                                   the first evaluate.corruption_images test images, read with 1 view
  speed.json                       inference images/s (a timing: differs from run to run)
  plots/sklearn/confusion_matrix.json  actual vs predicted, for DVC's confusion template
  plots/sklearn/roc.json           digits accepted against non-digits accepted at every threshold (ROC), the
                                   confidences rounded to ROC_DECIMALS
  confusion_matrix.png             the same matrix as a Seaborn heatmap
  mistakes.png                     the most confident mistakes: image, true and predicted label, confidence

Numbers that come from probabilities are written at a precision that every CPU agrees on
(digitlab/inference/rounding.py), so a rebuild changes no tracked file but speed.json.

Usage: python -m stages.evaluate PREPARED_DIR MODEL_PATH(.onnx) REPORT_DIR
"""

import argparse
import time
from pathlib import Path

from digitlab.shared.errors import PipelineError, run_stage
from digitlab.shared.params import load_params

import numpy as np
from dvclive import Live
from sklearn.metrics import roc_auc_score

from digitlab import figures
from digitlab.evaluation import answers
from digitlab.evaluation.corruptions import CORRUPTIONS, corrupt
from digitlab.evaluation.scores import (
    confusion_matrix,
    cross_entropy,
    most_confident_mistakes,
    per_class_scores,
    reliability,
)
from digitlab.files.arrays import load_arrays
from digitlab.files.atomic import write_json, write_text
from digitlab.inference.onnx_model import load_onnx_model
from digitlab.inference.rejection import confidences, rejected
from digitlab.inference.rounding import share, significant
from digitlab.inference.views import predict_probabilities

# The ROC's confidences are rounded to this many decimals: its points then stay put from one CPU to
# another, where confidences differ in their 7th digit (a finer curve would move with them).
ROC_DECIMALS = 2


def corruption_accuracies(model, images: np.ndarray, labels: np.ndarray, params) -> list[dict]:
    """The accuracy on `images` under each of MNIST-C's corruptions (digitlab/evaluation/corruptions.py), read
    with 1 view: the model as it is, as the paper scores its models."""
    rows = []
    for name in CORRUPTIONS:
        corrupted = corrupt(images, name, params.corruption_seed)
        predicted = predict_probabilities(model, corrupted, params.batch_size, 1).argmax(axis=1)
        rows.append({"corruption": name, "accuracy": share((predicted == labels).mean())})
        print(
            f"evaluate: MNIST-C {name}: {rows[-1]['accuracy']:.2%} of {len(labels):,} test images read right",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("model_path", type=Path)
    parser.add_argument("report_dir", type=Path)
    args = parser.parse_args(argv)
    params = load_params().evaluate

    test = load_arrays(args.prepared_dir / "test.npz")
    model = load_onnx_model(args.model_path)
    labels = test["labels"].astype(np.int64)

    # A first small call builds the prediction graph, so the timing below is steady-state speed.
    predict_probabilities(model, test["images"][: params.batch_size], params.batch_size, params.tta_views)
    started = time.perf_counter()
    probabilities = predict_probabilities(model, test["images"], params.batch_size, params.tta_views)
    seconds = time.perf_counter() - started
    predicted = probabilities.argmax(axis=1)

    # "Not a digit": the test digits and the test non-digits, each refused below the model's threshold.
    if params.tta_views not in model.thresholds:
        raise PipelineError(
            f'{args.model_path} carries no "not a digit" threshold for {params.tta_views} views; '
            "run `dvc repro --force train`"
        )
    threshold = model.thresholds[params.tta_views]
    nondigits = load_arrays(args.prepared_dir / "nondigits_test.npz")
    digit_confidence = confidences(probabilities)
    nondigit_probabilities = predict_probabilities(model, nondigits["images"], params.batch_size, params.tta_views)
    nondigit_confidence = confidences(nondigit_probabilities)
    digits_refused, nondigits_refused = rejected(digit_confidence, threshold), rejected(nondigit_confidence, threshold)
    # The test digits as users send them (digitlab/images/user_digits.py): refused, they are a user's false refusal.
    users = load_arrays(args.prepared_dir / "user_digits_test.npz")
    users_probabilities = predict_probabilities(model, users["images"], params.batch_size, params.tta_views)
    users_refused = rejected(confidences(users_probabilities), threshold)
    users_right = (users_probabilities.argmax(axis=1) == users["labels"]) & ~users_refused  # answered, and right
    drawn = nondigits["hands"] != ""  # drawn as strokes, by hands that training never saw
    # A digit is the positive class, its confidence the score: the ROC's threshold is the confidence itself.
    is_digit = np.concatenate([np.ones(len(labels), int), np.zeros(len(nondigit_confidence), int)])
    scored = np.concatenate([digit_confidence, nondigit_confidence])

    matrix = confusion_matrix(labels, predicted)
    scores = per_class_scores(labels, predicted)
    accuracy = float((predicted == labels).mean())
    calibration, ece = reliability(probabilities, labels, params.calibration_bins)
    robustness = corruption_accuracies(
        model, test["images"][: params.corruption_images], labels[: params.corruption_images], params
    )
    with Live(str(args.report_dir), dvcyaml=None, save_dvc_exp=False) as live:
        # In the order `dvc exp show` gives the columns: the headline test figures first.
        live.log_metric("test/accuracy", share(accuracy), plot=False)
        live.log_metric("test/errors", int((predicted != labels).sum()), plot=False)
        live.log_metric("test/loss", significant(cross_entropy(probabilities, labels)), plot=False)
        # Macro precision and recall are left to per_class.json: on MNIST's balanced classes they add
        # little to accuracy and macro F1, and each metric is one more column in every `dvc exp show`.
        live.log_metric("test/macro_f1", share(np.mean([row["f1"] for row in scores])), plot=False)
        live.log_metric("test/ece", significant(ece), plot=False)
        live.log_metric("test/accepted_accuracy", share((predicted == labels)[~digits_refused].mean()), plot=False)
        live.log_metric("reject/threshold", threshold, plot=False)
        live.log_metric("reject/auroc", share(roc_auc_score(is_digit, scored)), plot=False)
        live.log_metric("reject/nondigits", share(nondigits_refused.mean()), plot=False)
        live.log_metric("reject/drawn_nondigits", share(nondigits_refused[drawn].mean()), plot=False)
        live.log_metric("reject/digits", share(digits_refused.mean()), plot=False)
        live.log_metric("reject/user_digits", share(users_refused.mean()), plot=False)
        live.log_metric("robust/mean_accuracy", share(np.mean([row["accuracy"] for row in robustness])), plot=False)
        live.log_metric("robust/worst_accuracy", min(row["accuracy"] for row in robustness), plot=False)
        live.log_sklearn_plot("confusion_matrix", labels, predicted, name="confusion_matrix.json")
        live.log_sklearn_plot("roc", is_digit, np.round(scored.astype(np.float64), ROC_DECIMALS), name="roc.json")
    # Per-class scores are plots, not metrics: 30 more columns would crowd `dvc exp show` and `dvc metrics diff`.
    write_json(args.report_dir / "per_class.json", scores)
    write_json(args.report_dir / "calibration.json", calibration)
    write_json(args.report_dir / "corruptions.json", robustness)
    kinds = nondigits["kinds"]
    write_json(
        args.report_dir / "rejection.json",
        {
            "threshold": threshold,
            "views": params.tta_views,
            "digits": {"count": len(labels), "refused": int(digits_refused.sum())},
            "nondigits": {"count": len(kinds), "refused": int(nondigits_refused.sum())},
            "user_digits": {
                "count": len(users["labels"]),
                "refused": int(users_refused.sum()),
                "read_right": int(users_right.sum()),
            },
            "drawn_nondigits": {"count": int(drawn.sum()), "refused": int(nondigits_refused[drawn].sum())},
            "nondigits_refused_by_kind": {
                str(kind): round(float(nondigits_refused[kinds == kind].mean()), 4) for kind in np.unique(kinds)
            },
            "drawn_nondigits_refused_by_hand": {
                str(hand): round(float(nondigits_refused[nondigits["hands"] == hand].mean()), 4)
                for hand in np.unique(nondigits["hands"][drawn])
            },
        },
    )
    # Image by image, what a review pairs with another version's answers (the wrong ones only: small for git).
    write_text(
        args.report_dir / answers.FILE_NAME,
        answers.to_json(
            {
                "threshold": threshold,
                "views": params.tta_views,
                "digits": answers.digit_answers(test["images"], labels, probabilities, digits_refused),
                "nondigits": answers.nondigit_answers(
                    nondigits["images"], kinds, nondigit_probabilities, nondigits_refused
                ),
            }
        ),
    )
    # Timings differ from run to run, so they live apart from the reproducible metrics above.
    write_json(args.report_dir / "speed.json", {"inference": {"images_per_second": round(len(labels) / seconds)}})
    figures.confusion_heatmap(matrix, args.report_dir / "confusion_matrix.png")
    mistakes = most_confident_mistakes(probabilities, labels, params.mistakes)
    figures.image_grid(
        test["images"][mistakes],
        [f"true {labels[i]}, pred {predicted[i]}\n#{i}, {probabilities[i].max():.1%}" for i in mistakes],
        args.report_dir / "mistakes.png",
        f"The {len(mistakes)} most confident mistakes on the test set",
        wrong=[True] * len(mistakes),
    )

    print(
        f"evaluate: test accuracy {accuracy:.2%} ({int(matrix.sum() - np.trace(matrix))} errors of "
        f"{len(labels):,}), predicted at {len(labels) / seconds:,.0f} images/s by onnxruntime"
    )
    print(
        f'evaluate: "not a digit" below {threshold:.1%} confidence: {nondigits_refused.mean():.1%} of '
        f"{len(kinds):,} non-digits ({nondigits_refused[drawn].mean():.1%} of the {drawn.sum():,} drawn by hands "
        f"training never saw) and {digits_refused.mean():.2%} of the test digits refused"
    )
    print(
        f"evaluate: of {len(users['labels']):,} test digits in users' hands and looks, {users_refused.mean():.2%} "
        f"refused and {users_right.mean():.1%} read right"
    )
    print(f"evaluate: metrics and plots in {args.report_dir}/")


if __name__ == "__main__":
    run_stage(main)
