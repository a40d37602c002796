"""The four official MNIST files: where they come from, their checksums, and the IDX format they use."""
