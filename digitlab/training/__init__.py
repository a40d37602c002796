"""Training: the CNN built from params (model), fitting it (fitting), on several devices or machines
(distribute), writing and checking the model files (saving). TensorFlow starts quietly wherever it is
first imported (digitlab/shared/__init__.py)."""
