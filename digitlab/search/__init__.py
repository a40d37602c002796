"""mnist-search: an Optuna study whose trials are DVC experiments (docs/search.md).

space.py reads search.yaml; trials.py runs one trial as `dvc exp run` and reads its metrics back from the
experiment; study.py proposes, runs and records the trials; summary.py writes reports/search/.
"""
