"""What every stage shares: params, the prepared arrays' format, test-time views, atomic writes, errors."""

import os

# Settings that must be in place before TensorFlow or Matplotlib is first imported. Every stage runs
# this first (stages/__init__.py imports it), and so does every folder of digitlab that imports either.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter
os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files; no display needed
