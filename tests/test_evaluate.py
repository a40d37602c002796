"""Evaluation scores: confusion matrix, per-class scores, cross-entropy, calibration, mistakes; the answers file."""

import json

import numpy as np
import pytest

from digitlab.evaluation.answers import digit_answers, fingerprint, nondigit_answers, to_json
from digitlab.evaluation.scores import (
    confusion_matrix,
    cross_entropy,
    most_confident_mistakes,
    per_class_scores,
    reliability,
)


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]))
    assert matrix[0, 0] == 1 and matrix[0, 1] == 1 and matrix[1, 1] == 1 and matrix[2, 1] == 1
    assert matrix.sum() == 4 and matrix.shape == (10, 10)
    assert matrix.dtype.kind == "i"  # counts: the heatmap writes them with fmt="d"


def test_per_class_scores_on_a_worked_example():
    # digit 1: predicted 3 times, right twice -> precision 2/3; actual twice, both found -> recall 1
    scores = per_class_scores(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2]))
    assert [row["digit"] for row in scores] == [str(digit) for digit in range(10)]
    one = scores[1]
    assert one["precision"] == pytest.approx(2 / 3, abs=1e-6) and one["recall"] == 1.0
    assert one["f1"] == pytest.approx(0.8, abs=1e-6) and one["support"] == 2
    assert scores[0]["recall"] == 0.5 and scores[5] == {
        "digit": "5",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    assert all(type(row["support"]) is int for row in scores)  # JSON integers in per_class.json


def test_per_class_scores_are_zero_where_a_digit_is_never_predicted_or_never_true():
    # 3 is true once and never predicted (precision undefined), 4 predicted once and never true (recall undefined)
    scores = per_class_scores(np.array([3, 7]), np.array([4, 7]))
    assert scores[3] == {"digit": "3", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores[4] == {"digit": "4", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert scores[7] == {"digit": "7", "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def test_cross_entropy_of_confident_and_uniform_predictions():
    uniform = np.full((2, 10), 0.1)
    assert cross_entropy(uniform, np.array([3, 7])) == pytest.approx(np.log(10))
    certain = np.eye(10)[[4]]
    assert cross_entropy(certain, np.array([4])) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(cross_entropy(certain, np.array([5])))  # clipped, never infinite


def test_reliability_bins_and_expected_calibration_error():
    # Two answers at 95% confidence (one right), two at 55% (both right).
    probabilities = np.full((4, 10), 0.0)
    probabilities[[0, 1], [1, 2]] = 0.95
    probabilities[[2, 3], [3, 4]] = 0.55
    probabilities[probabilities == 0] = 0.01  # the rest, so that rows are proper distributions
    labels = np.array([1, 7, 3, 4])
    rows, ece = reliability(probabilities, labels, bins=10)
    assert [(r["bin"], r["count"], r["accuracy"]) for r in rows] == [("0.50-0.60", 2, 1.0), ("0.90-1.00", 2, 0.5)]
    # |0.55 - 1| * 2/4 + |0.95 - 0.5| * 2/4
    assert ece == pytest.approx(0.45, abs=1e-9)


def test_perfectly_confident_and_right_is_perfectly_calibrated():
    rows, ece = reliability(np.eye(10), np.arange(10), bins=10)
    assert ece == 0 and rows == [{"bin": "0.90-1.00", "confidence": 1.0, "accuracy": 1.0, "count": 10}]


def test_most_confident_mistakes_come_first_and_right_answers_never():
    probabilities = np.full((4, 10), 0.05)
    probabilities[0, 1] = 0.9  # right
    probabilities[1, 2] = 0.6  # wrong
    probabilities[2, 3] = 0.8  # wrong, more confident
    probabilities[3, 4] = 0.7  # wrong
    assert most_confident_mistakes(probabilities, np.array([1, 0, 0, 0]), count=2).tolist() == [2, 3]


def test_answers_list_the_digits_misread_or_refused_and_the_nondigits_accepted():
    images = np.arange(4 * 784, dtype=np.float32).reshape(4, 28, 28, 1)
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.45, 0.55], [0.8, 0.2]])
    labels = np.array([0, 0, 1, 0])
    refused = np.array([False, False, True, False])  # image 2: read right, but refused

    digits = digit_answers(images, labels, probabilities, refused)
    assert digits == {
        "count": 4,
        "fingerprint": fingerprint(images),
        "wrong": [
            {"index": 1, "label": 0, "answer": 1, "confidence": 0.7, "refused": False},
            {"index": 2, "label": 1, "answer": 1, "confidence": 0.55, "refused": True},
        ],
    }
    nondigits = nondigit_answers(images, np.array(["a", "b", "c", "d"]), probabilities, refused)
    assert [row["index"] for row in nondigits["wrong"]] == [0, 1, 3]  # all but the one refused
    assert nondigits["wrong"][0] == {"index": 0, "kind": "a", "answer": 0, "confidence": 0.9}

    answers = {"threshold": 0.6, "views": 1, "digits": digits, "nondigits": nondigits}
    text = to_json(answers)
    assert json.loads(text) == answers
    assert '    {"index": 1, "label": 0, "answer": 1, "confidence": 0.7, "refused": false},' in text.splitlines()
    # The fingerprint names the images and their order.
    assert fingerprint(images[::-1]) != fingerprint(images) == fingerprint(images.copy())
