"""Scoring predictions: confusion matrix, per-class scores, cross-entropy and calibration.

Plain NumPy, no TensorFlow, so that the report command can use it without loading Keras.
"""

import numpy as np

from digitlab.shared.prepared import CLASSES


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
