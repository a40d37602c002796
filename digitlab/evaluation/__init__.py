"""Scoring the test set's predictions: confusion matrix, per-class scores, calibration (scores); the answers
image by image, kept for the review (answers); MNIST-C's corruptions (corruptions)."""
