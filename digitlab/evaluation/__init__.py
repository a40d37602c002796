"""Evaluating a trained model: loading it and predicting (prediction), scores and calibration (scores)."""

import digitlab.shared  # noqa: F401  (TensorFlow's and Matplotlib's settings, before either is imported)
