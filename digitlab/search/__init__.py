"""The search (`python -m digitlab.search`): an Optuna study whose trials are DVC experiments (docs/search.md).

space.py reads search.yaml; trials.py runs one trial as `dvc exp run` and reads its metrics back from the
experiment; study.py proposes, runs and records the trials; summary.py writes reports/search/; confirm.py
re-runs the best trials and the default with the same seeds; table.py shows experiments side by side in a
terminal; __main__.py is the command.
"""
