"""Scoring predictions: confusion matrix, per-class scores, cross-entropy and calibration.

NumPy and scikit-learn, no TensorFlow, so that the report command can use it without loading Keras.
"""

from digitlab.shared.mnist import CLASSES

import numpy as np
from sklearn import metrics

from digitlab.inference.rounding import share, significant


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Counts of (true digit, predicted digit) pairs: rows true, columns predicted, every digit of
    CLASSES a row and a column even where it never occurs."""
    return metrics.confusion_matrix(labels, predicted, labels=list(CLASSES))


def per_class_scores(labels: np.ndarray, predicted: np.ndarray) -> list[dict]:
    """Precision, recall and F1 of each digit, and its support (how many of `labels` it is); 0 where a
    ratio is undefined (a digit never predicted, or never in `labels`)."""
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=list(CLASSES), zero_division=0
    )
    return [
        {
            "digit": str(digit),
            "precision": share(p),
            "recall": share(r),
            "f1": share(f),
            "support": int(s),
        }
        for digit, p, r, f, s in zip(CLASSES, precision, recall, f1, support)
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
        rows.append(
            {
                "bin": f"{i / bins:.2f}-{(i + 1) / bins:.2f}",
                "confidence": significant(mean_confidence),
                "accuracy": share(accuracy),
                "count": int(members.sum()),
            }
        )
    return rows, gap / len(labels)


def most_confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the wrong predictions with the highest confidence, most confident first."""
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != labels)
    order = np.argsort(-probabilities[wrong].max(axis=1), kind="stable")
    return wrong[order[:count]]
