"""What every stage shares, fetch included: params.yaml validated (params), MNIST's facts (mnist), one-line
errors (errors), and the environment TensorFlow and Matplotlib need (here)."""

import os

# Settings that must be in place before TensorFlow or Matplotlib is first imported. Every stage runs
# this first (stages/__init__.py imports it), and so does every folder of digitlab that imports either.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter
os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files; no display needed
