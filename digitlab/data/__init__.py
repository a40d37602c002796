"""The data: the four official MNIST files (where they come from, their checksums, the IDX format),
images of any kind made to look like an MNIST digit, and images that hold no digit."""
