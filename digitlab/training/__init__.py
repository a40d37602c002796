"""Training: the CNN built from params (model), fitting it (fitting), on several devices or machines (distribute)."""

import digitlab.shared  # noqa: F401  (TensorFlow's and Matplotlib's settings, before either is imported)
