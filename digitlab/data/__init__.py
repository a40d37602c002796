"""The raw MNIST files as fetch downloaded them: the IDX format (idx), the train and test splits (raw).
Explore and preprocess depend on this folder."""
