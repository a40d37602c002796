"""Stage 5, evaluate: measure the trained model, once, on the 10,000 test images.

Writes into REPORT_DIR:
  metrics.json                     test.accuracy, test.loss, test.errors, macro precision/recall/F1, test.ece
  per_class.json                   precision, recall, F1 and support of each digit
  calibration.json                 mean confidence and accuracy per confidence bin (reliability diagram)
  speed.json                       inference images/s (a timing: differs from run to run)
  plots/sklearn/confusion_matrix.json  actual vs predicted, for DVC's confusion template
  confusion_matrix.png             the same matrix as a Seaborn heatmap
  mistakes.png                     the most confident mistakes: image, true and predicted label, confidence

Usage: python -m stages.evaluate PREPARED_DIR MODEL_PATH REPORT_DIR
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter

import numpy as np  # noqa: E402
from dvclive import Live  # noqa: E402

from stages import figures  # noqa: E402
from stages.atomic import write_json  # noqa: E402
from stages.errors import run_stage  # noqa: E402
from stages.mnist import CLASSES, load_arrays  # noqa: E402
from stages.model import load_model  # noqa: E402
from stages.params import load_params  # noqa: E402


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Counts of (true digit, predicted digit) pairs: rows true, columns predicted."""
    matrix = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> list[dict]:
    """Precision, recall and F1 of each digit; 0 where a ratio is undefined."""
    true_positives = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros(len(CLASSES)), where=predicted > 0)
    recall = np.divide(true_positives, actual, out=np.zeros(len(CLASSES)), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(len(CLASSES)), where=both > 0)
    return [
        {"digit": str(digit), "precision": round(float(p), 6), "recall": round(float(r), 6),
         "f1": round(float(f), 6), "support": int(s)}
        for digit, p, r, f, s in zip(CLASSES, precision, recall, f1, actual)
    ]


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (plain, without label smoothing)."""
    true_class = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(true_class, 1e-7, 1.0)).mean())


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> tuple[list[dict], float]:
    """Confidence against accuracy in equal-width confidence bins, and the expected calibration error.

    ECE is the count-weighted mean gap between a bin's mean confidence and its accuracy:
    0 for a model whose 90%-confident answers are right 90% of the time, and so on.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # Bin i holds confidences in (i/bins, (i+1)/bins]; the lowest possible confidence is 1/classes.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows, gap = [], 0.0
    for i in range(bins):
        members = index == i
        if not members.any():
            continue
        mean_confidence, accuracy = float(confidence[members].mean()), float(correct[members].mean())
        gap += members.sum() * abs(mean_confidence - accuracy)
        rows.append({"bin": f"{i / bins:.2f}-{(i + 1) / bins:.2f}", "confidence": round(mean_confidence, 6),
                     "accuracy": round(accuracy, 6), "count": int(members.sum())})
    return rows, gap / len(labels)


def most_confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the wrong predictions with the highest confidence, most confident first."""
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != labels)
    order = np.argsort(-probabilities[wrong].max(axis=1), kind="stable")
    return wrong[order[:count]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("model_path", type=Path)
    parser.add_argument("report_dir", type=Path)
    args = parser.parse_args(argv)
    params = load_params()["evaluate"]

    test = load_arrays(args.prepared_dir / "test.npz")
    model = load_model(args.model_path)
    labels = test["labels"].astype(np.int64)

    # A first small call builds the prediction graph, so the timing below is steady-state speed.
    model.predict(test["images"][: params["batch_size"]], batch_size=params["batch_size"], verbose=0)
    started = time.perf_counter()
    probabilities = model.predict(test["images"], batch_size=params["batch_size"], verbose=0)
    seconds = time.perf_counter() - started
    predicted = probabilities.argmax(axis=1)

    matrix = confusion_matrix(labels, predicted)
    scores = per_class_scores(matrix)
    accuracy = float((predicted == labels).mean())
    calibration, ece = reliability(probabilities, labels, params["calibration_bins"])
    with Live(str(args.report_dir), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_metric("test/accuracy", round(accuracy, 6), plot=False)
        live.log_metric("test/loss", round(cross_entropy(probabilities, labels), 6), plot=False)
        live.log_metric("test/errors", int((predicted != labels).sum()), plot=False)
        for score in ("precision", "recall", "f1"):
            macro = np.mean([row[score] for row in scores])
            live.log_metric(f"test/macro_{score}", round(float(macro), 6), plot=False)
        live.log_metric("test/ece", round(ece, 6), plot=False)
        live.log_sklearn_plot("confusion_matrix", labels, predicted, name="confusion_matrix.json")
    write_json(args.report_dir / "per_class.json", scores)
    write_json(args.report_dir / "calibration.json", calibration)
    # Timings differ from run to run, so they live apart from the reproducible metrics above.
    write_json(args.report_dir / "speed.json", {"inference": {"images_per_second": round(len(labels) / seconds)}})
    figures.confusion_heatmap(matrix, args.report_dir / "confusion_matrix.png")
    mistakes = most_confident_mistakes(probabilities, labels, params["mistakes"])
    figures.image_grid(
        test["images"][mistakes],
        [f"#{i}: true {labels[i]}, pred {predicted[i]}\n{probabilities[i].max():.1%}" for i in mistakes],
        args.report_dir / "mistakes.png",
        f"The {len(mistakes)} most confident mistakes on the test set",
        wrong=[True] * len(mistakes),
    )

    print(f"evaluate: test accuracy {accuracy:.2%} ({int(matrix.sum() - np.trace(matrix))} errors of "
          f"{len(labels):,}), predicted at {len(labels) / seconds:,.0f} images/s")
    print(f"evaluate: metrics and plots in {args.report_dir}/")


if __name__ == "__main__":
    run_stage(main)
