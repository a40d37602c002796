"""Images as users make them: any image turned into the MNIST look (reading), and images in the same
looks that hold no digit (nondigits). Preprocess and digitlab/serving depend on this folder."""
