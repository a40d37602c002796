"""digitlab: what the six pipeline stages in `stages/` share, and the ways to use the model.

  params      params.yaml, typed and validated up front
  raw, idx    the four official MNIST files: names, checksums, the IDX format
  prepared    the arrays the model sees: classes, image size, scaling, .npz files
  model       the CNN, built from params
  training    fitting it: augmentation, batches, optimizer, schedule
  prediction  loading a trained model and predicting probabilities
  scores      confusion matrix, per-class scores, calibration (NumPy only)
  figures     the stages' PNG figures
  report      the pull-request report (`python -m digitlab.report`)
  atomic, errors  writing outputs whole, and one-line errors for bad input
"""

import os

# Settings that must be in place before TensorFlow or Matplotlib is first imported.
# Every stage imports this package first (see stages/__init__.py).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter
os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files; no display needed
