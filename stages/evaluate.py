"""Stage 5, evaluate: measure the trained model, once, on the 10,000 test images.

The model scored is MODEL_PATH, the ONNX export (model.onnx, run by onnxruntime: the model users
run; train checked that it answers as model.keras does), so no TensorFlow is imported. It also reads
the test non-digits and the test digits as users send them, and measures the "not a digit" answer at
the threshold model.onnx carries for evaluate.tta_views (digitlab/inference/rejection.py).

`evaluate` computes the results, `write_reports` writes them into REPORT_DIR (the files are
dvc.yaml's outs; what the metrics mean: docs/metrics.md). Numbers that come from probabilities are
written at a precision that every CPU agrees on (digitlab/inference/rounding.py), so a rebuild
changes no tracked file but speed.json, a timing.

Usage: python -m stages.evaluate PREPARED_DIR MODEL_PATH(.onnx) REPORT_DIR
"""

import time
from dataclasses import dataclass
from pathlib import Path

from digitlab.shared.command import stage_paths
from digitlab.shared.errors import UserError, run_command
from digitlab.shared.params import Evaluate, load_params

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


@dataclass
class Refusals:
    """'Not a digit' at the threshold of the model: the test digits, the test non-digits and the test digits
    as users send them (digitlab/images/user_digits.py), each refused below it."""

    threshold: float
    nondigits: dict
    nondigit_probabilities: np.ndarray
    digits_refused: np.ndarray
    nondigits_refused: np.ndarray
    users: dict
    users_refused: np.ndarray
    users_right: np.ndarray  # answered, and right
    drawn: np.ndarray  # the non-digits drawn as strokes, by hands that training never saw
    is_digit: np.ndarray  # the ROC's classes: the test digits, then the non-digits
    scored: np.ndarray  # the ROC's scores: the confidences of the same


@dataclass
class Results:
    """Everything evaluate writes, computed: each field is the content of one output (or a figure's input)."""

    metrics: dict  # metrics.json: test.*, reject.* and robust.*, in the order `dvc exp show` gives the columns
    labels: np.ndarray  # with `predicted`, plots/sklearn/confusion_matrix.json
    predicted: np.ndarray
    is_digit: np.ndarray  # with `roc_scores`, plots/sklearn/roc.json: digits against non-digits accepted
    roc_scores: np.ndarray  # the confidences, rounded to ROC_DECIMALS
    per_class: list[dict]  # per_class.json: precision, recall, F1 and support of each digit
    calibration: list[dict]  # calibration.json: mean confidence and accuracy per confidence bin
    corruptions: list[dict]  # corruptions.json: the accuracy under each of MNIST-C's corruptions
    rejection: dict  # rejection.json: what was refused, by set, kind and hand
    answers: dict  # answers.json (digitlab/evaluation/answers.py): the wrong answers, image by image
    speed: dict  # speed.json: inference images/s
    matrix: np.ndarray  # confusion_matrix.png
    mistake_images: np.ndarray  # mistakes.png: the most confident mistakes, captioned and titled
    mistake_titles: list[str]
    mistakes_title: str
    summary: list[str]  # the lines printed at the end


def main(argv: list[str] | None = None) -> None:
    args = stage_paths(__doc__, ["prepared_dir", "model_path", "report_dir"], argv)
    params = load_params().evaluate
    results = evaluate(args.prepared_dir, args.model_path, params)
    write_reports(args.report_dir, results)


def evaluate(prepared_dir: Path, model_path: Path, params: Evaluate) -> Results:
    """Reads the test splits and the model, and measures it on them."""
    test = load_arrays(prepared_dir / "test.npz")
    model = load_onnx_model(model_path)
    labels = test["labels"].astype(np.int64)
    probabilities, seconds = timed_probabilities(model, test["images"], params)
    predicted = probabilities.argmax(axis=1)
    refusals = not_a_digit(model, model_path, prepared_dir, params, labels, probabilities)

    matrix = confusion_matrix(labels, predicted)
    scores = per_class_scores(labels, predicted)
    accuracy = float((predicted == labels).mean())
    calibration, ece = reliability(probabilities, labels, params.calibration_bins)
    robustness = corruption_accuracies(
        model, test["images"][: params.corruption_images], labels[: params.corruption_images], params
    )
    mistakes = most_confident_mistakes(probabilities, labels, params.mistakes)
    return Results(
        metrics=metrics(labels, predicted, probabilities, accuracy, scores, ece, refusals, robustness),
        labels=labels,
        predicted=predicted,
        is_digit=refusals.is_digit,
        roc_scores=np.round(refusals.scored.astype(np.float64), ROC_DECIMALS),
        per_class=scores,
        calibration=calibration,
        corruptions=robustness,
        rejection=rejection_counts(refusals, params, len(labels)),
        answers={
            "threshold": refusals.threshold,
            "views": params.tta_views,
            "digits": answers.digit_answers(test["images"], labels, probabilities, refusals.digits_refused),
            "nondigits": answers.nondigit_answers(
                refusals.nondigits["images"],
                refusals.nondigits["kinds"],
                refusals.nondigit_probabilities,
                refusals.nondigits_refused,
            ),
        },
        speed={"inference": {"images_per_second": round(len(labels) / seconds)}},
        matrix=matrix,
        mistake_images=test["images"][mistakes],
        mistake_titles=[f"true {labels[i]}, pred {predicted[i]}\n#{i}, {probabilities[i].max():.1%}" for i in mistakes],
        mistakes_title=f"The {len(mistakes)} most confident mistakes on the test set",
        summary=summary(accuracy, matrix, len(labels), seconds, refusals),
    )


def timed_probabilities(model, images: np.ndarray, params: Evaluate) -> tuple[np.ndarray, float]:
    """The probabilities of `images` with evaluate.tta_views, and the seconds they took."""
    # A first small call builds the prediction graph, so the timing below is steady-state speed.
    predict_probabilities(model, images[: params.batch_size], params.batch_size, params.tta_views)
    started = time.perf_counter()
    probabilities = predict_probabilities(model, images, params.batch_size, params.tta_views)
    return probabilities, time.perf_counter() - started


def not_a_digit(
    model, model_path: Path, prepared_dir: Path, params: Evaluate, labels: np.ndarray, probabilities: np.ndarray
) -> Refusals:
    """Reads the test non-digits and user digits, and refuses what falls below the model's threshold."""
    if params.tta_views not in model.thresholds:
        raise UserError(
            f'{model_path} carries no "not a digit" threshold for {params.tta_views} views; '
            "run `dvc repro --force train`"
        )
    threshold = model.thresholds[params.tta_views]
    nondigits = load_arrays(prepared_dir / "nondigits_test.npz")
    digit_confidence = confidences(probabilities)
    nondigit_probabilities = predict_probabilities(model, nondigits["images"], params.batch_size, params.tta_views)
    nondigit_confidence = confidences(nondigit_probabilities)
    digits_refused, nondigits_refused = rejected(digit_confidence, threshold), rejected(nondigit_confidence, threshold)
    # Refused, a test digit as users send it is a user's false refusal.
    users = load_arrays(prepared_dir / "user_digits_test.npz")
    users_probabilities = predict_probabilities(model, users["images"], params.batch_size, params.tta_views)
    users_refused = rejected(confidences(users_probabilities), threshold)
    return Refusals(
        threshold=threshold,
        nondigits=nondigits,
        nondigit_probabilities=nondigit_probabilities,
        digits_refused=digits_refused,
        nondigits_refused=nondigits_refused,
        users=users,
        users_refused=users_refused,
        users_right=(users_probabilities.argmax(axis=1) == users["labels"]) & ~users_refused,
        drawn=nondigits["hands"] != "",
        # A digit is the positive class, its confidence the score: the ROC's threshold is the confidence itself.
        is_digit=np.concatenate([np.ones(len(labels), int), np.zeros(len(nondigit_confidence), int)]),
        scored=np.concatenate([digit_confidence, nondigit_confidence]),
    )


def metrics(
    labels: np.ndarray,
    predicted: np.ndarray,
    probabilities: np.ndarray,
    accuracy: float,
    scores: list[dict],
    ece: float,
    refusals: Refusals,
    robustness: list[dict],
) -> dict:
    """metrics.json, in the order `dvc exp show` gives the columns: the headline test figures first."""
    nondigits_refused, drawn = refusals.nondigits_refused, refusals.drawn
    return {
        "test/accuracy": share(accuracy),
        "test/errors": int((predicted != labels).sum()),
        "test/loss": significant(cross_entropy(probabilities, labels)),
        # Macro precision and recall are left to per_class.json: on MNIST's balanced classes they add
        # little to accuracy and macro F1, and each metric is one more column in every `dvc exp show`.
        "test/macro_f1": share(np.mean([row["f1"] for row in scores])),
        "test/ece": significant(ece),
        "test/accepted_accuracy": share((predicted == labels)[~refusals.digits_refused].mean()),
        "reject/threshold": refusals.threshold,
        "reject/auroc": share(roc_auc_score(refusals.is_digit, refusals.scored)),
        "reject/nondigits": share(nondigits_refused.mean()),
        "reject/drawn_nondigits": share(nondigits_refused[drawn].mean()),
        "reject/digits": share(refusals.digits_refused.mean()),
        "reject/user_digits": share(refusals.users_refused.mean()),
        "robust/mean_accuracy": share(np.mean([row["accuracy"] for row in robustness])),
        "robust/worst_accuracy": min(row["accuracy"] for row in robustness),
    }


def rejection_counts(refusals: Refusals, params: Evaluate, digit_count: int) -> dict:
    """rejection.json: the counts refused, the user digits read right, the non-digits refused by kind and by hand."""
    kinds, hands = refusals.nondigits["kinds"], refusals.nondigits["hands"]
    nondigits_refused, drawn = refusals.nondigits_refused, refusals.drawn
    return {
        "threshold": refusals.threshold,
        "views": params.tta_views,
        "digits": {"count": digit_count, "refused": int(refusals.digits_refused.sum())},
        "nondigits": {"count": len(kinds), "refused": int(nondigits_refused.sum())},
        "user_digits": {
            "count": len(refusals.users["labels"]),
            "refused": int(refusals.users_refused.sum()),
            "read_right": int(refusals.users_right.sum()),
        },
        "drawn_nondigits": {"count": int(drawn.sum()), "refused": int(nondigits_refused[drawn].sum())},
        "nondigits_refused_by_kind": {
            str(kind): round(float(nondigits_refused[kinds == kind].mean()), 4) for kind in np.unique(kinds)
        },
        "drawn_nondigits_refused_by_hand": {
            str(hand): round(float(nondigits_refused[hands == hand].mean()), 4) for hand in np.unique(hands[drawn])
        },
    }


def summary(accuracy: float, matrix: np.ndarray, digit_count: int, seconds: float, refusals: Refusals) -> list[str]:
    """The lines printed once the files are written."""
    refused, drawn, users = refusals.nondigits_refused, refusals.drawn, refusals.users
    return [
        f"evaluate: test accuracy {accuracy:.2%} ({int(matrix.sum() - np.trace(matrix))} errors of "
        f"{digit_count:,}), predicted at {digit_count / seconds:,.0f} images/s by onnxruntime",
        f'evaluate: "not a digit" below {refusals.threshold:.1%} confidence: {refused.mean():.1%} of '
        f"{len(refusals.nondigits['kinds']):,} non-digits ({refused[drawn].mean():.1%} of the {drawn.sum():,} drawn "
        f"by hands training never saw) and {refusals.digits_refused.mean():.2%} of the test digits refused",
        f"evaluate: of {len(users['labels']):,} test digits in users' hands and looks, "
        f"{refusals.users_refused.mean():.2%} refused and {refusals.users_right.mean():.1%} read right",
    ]


def write_reports(report_dir: Path, results: Results) -> None:
    """Writes the `results` into `report_dir`, then prints their summary."""
    with Live(str(report_dir), dvcyaml=None, save_dvc_exp=False) as live:
        for name, value in results.metrics.items():
            live.log_metric(name, value, plot=False)
        live.log_sklearn_plot("confusion_matrix", results.labels, results.predicted, name="confusion_matrix.json")
        live.log_sklearn_plot("roc", results.is_digit, results.roc_scores, name="roc.json")
    # Per-class scores are plots, not metrics: 30 more columns would crowd `dvc exp show` and `dvc metrics diff`.
    write_json(report_dir / "per_class.json", results.per_class)
    write_json(report_dir / "calibration.json", results.calibration)
    write_json(report_dir / "corruptions.json", results.corruptions)
    write_json(report_dir / "rejection.json", results.rejection)
    # Image by image, what a review pairs with another version's answers (the wrong ones only: small for git).
    write_text(report_dir / answers.FILE_NAME, answers.to_json(results.answers))
    # Timings differ from run to run, so they live apart from the reproducible metrics above.
    write_json(report_dir / "speed.json", results.speed)
    figures.confusion_heatmap(results.matrix, report_dir / "confusion_matrix.png")
    figures.image_grid(
        results.mistake_images,
        results.mistake_titles,
        report_dir / "mistakes.png",
        results.mistakes_title,
        wrong=[True] * len(results.mistake_titles),
    )

    for line in results.summary:
        print(line)
    print(f"evaluate: metrics and plots in {report_dir}/")


if __name__ == "__main__":
    run_command(main)
