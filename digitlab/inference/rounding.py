"""Rounding: how many digits of the model's numbers are written into tracked files.

The same weights give probabilities that differ in their 7th digit from one CPU to another (float32
sums done in another order by other kernels). Written in full, a loss, a threshold or a plot's points
would then change in git on every rebuild, and `dvc metrics diff` would show changes where nothing
changed. So what comes from probabilities is written with SIGNIFICANT digits, thresholds rounded down
(so that they still refuse at most the share asked), and a share of images (a count divided by a
count) with up to 6 decimals, which is exact for up to a million images.
"""

import math

SIGNIFICANT = 4  # a loss of 0.013842 is written 0.01384: a thousand times coarser than the noise
THRESHOLD_DECIMALS = 4
SHARE_DECIMALS = 6
PROBABILITY_DECIMALS = 6  # what the reader answers: a probability shown to a person or a client
CONFIDENCE_DECIMALS = 2  # the test answers' confidences in answers.json, which the review compares


def significant(value: float, digits: int = SIGNIFICANT) -> float:
    """`value` rounded to `digits` significant digits: 0.0138421 -> 0.01384."""
    return float(f"{value:.{digits}g}")


def share(value: float) -> float:
    """A share of images, such as an accuracy: exact at SHARE_DECIMALS decimals."""
    return round(float(value), SHARE_DECIMALS)


def probability(value: float, decimals: int = PROBABILITY_DECIMALS) -> float:
    """A probability or confidence rounded to `decimals` decimals: 0.99999946 -> 0.999999."""
    return round(float(value), decimals)


def threshold_down(value: float) -> float:
    """A confidence threshold rounded down to THRESHOLD_DECIMALS decimals: 0.49972874 -> 0.4997."""
    scale = 10**THRESHOLD_DECIMALS
    return math.floor(float(value) * scale) / scale
