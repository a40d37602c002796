"""Evaluation arithmetic: confusion matrix, per-class scores, cross-entropy."""

import numpy as np
import pytest

from stages.evaluate import confusion_matrix, cross_entropy, per_class_scores


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]))
    assert matrix[0, 0] == 1 and matrix[0, 1] == 1 and matrix[1, 1] == 1 and matrix[2, 1] == 1
    assert matrix.sum() == 4 and matrix.shape == (10, 10)


def test_per_class_scores_on_a_worked_example():
    # digit 1: predicted 3 times, right twice -> precision 2/3; actual twice, both found -> recall 1
    scores = per_class_scores(confusion_matrix(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2])))
    one = scores[1]
    assert one["precision"] == pytest.approx(2 / 3, abs=1e-6) and one["recall"] == 1.0
    assert one["f1"] == pytest.approx(0.8, abs=1e-6) and one["support"] == 2
    assert scores[0]["recall"] == 0.5 and scores[5] == {
        "digit": "5", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0
    }


def test_cross_entropy_of_confident_and_uniform_predictions():
    uniform = np.full((2, 10), 0.1)
    assert cross_entropy(uniform, np.array([3, 7])) == pytest.approx(np.log(10))
    certain = np.eye(10)[[4]]
    assert cross_entropy(certain, np.array([4])) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(cross_entropy(certain, np.array([5])))  # clipped, never infinite
