"""The raw MNIST files as fetch downloaded them: the IDX format (idx), the train and test splits (splits)."""
