"""The pull-request report that CI posts (`python -m digitlab.review.report --rev main`)."""

import digitlab.shared  # noqa: F401  (TensorFlow's and Matplotlib's settings, before either is imported)
