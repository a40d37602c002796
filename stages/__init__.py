"""The six stages of the MNIST pipeline, in the order `dvc.yaml` runs them:
fetch, explore, preprocess, train, evaluate, sample_predict.

Each is run as `python -m stages.<name> <paths...>`; what they share lives in `digitlab`.
"""

import digitlab.shared  # noqa: F401  (sets TensorFlow's and Matplotlib's environment before any stage imports them)
