"""Scoring the test set's predictions: confusion matrix, per-class scores, calibration (scores)."""
