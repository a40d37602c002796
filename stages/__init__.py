"""The six stages of the MNIST pipeline and the modules they share.

Stages, in the order `dvc.yaml` runs them: fetch, explore, preprocess, train,
evaluate, sample_predict. Each is run as `python -m stages.<name> <paths...>`.
"""
