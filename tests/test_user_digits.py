"""Test digits as users send them (digitlab/images/user_digits.py): redrawn, in users' looks, from a seed."""

import numpy as np

from digitlab.images.nondigits import LOOKS
from digitlab.images.user_digits import STROKES, redrawn, user_digits


def digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-like digits: a bright 1 (a bar) and a bright 0 (a ring) in turn, on black."""
    images = np.zeros((count, 28, 28), np.uint8)
    images[0::2, 5:23, 12:16] = 255
    rows, cols = np.ogrid[:28, :28]
    ring = np.abs(np.hypot(rows - 14, cols - 14) - 8) < 2
    images[1::2][:, ring] = 255
    return images, np.array([1, 0] * (count // 2))


def test_the_same_seed_gives_the_same_images_and_another_seed_others():
    images, labels = digits(12)
    first, blank = user_digits(images, labels, seed=3)
    again, _ = user_digits(images, labels, seed=3)
    other, _ = user_digits(images, labels, seed=4)
    assert blank == 0 and first["images"].shape == (12, 28, 28, 1) and first["images"].dtype == np.float32
    assert np.array_equal(first["images"], again["images"]) and not np.array_equal(first["images"], other["images"])
    assert list(first["labels"]) == list(labels)  # each keeps its label


def test_each_look_and_stroke_comes_in_turn_and_changes_the_digit():
    images, labels = digits(12)
    made, _ = user_digits(images, labels, seed=0)
    assert list(made["looks"]) == [LOOKS[i % len(LOOKS)] for i in range(12)]
    # Redrawn and read back, no digit is the 28x28 original: another size, slant, place and stroke.
    assert all(np.abs(made["images"][i, ..., 0] - images[i] / 255).mean() > 0.02 for i in range(12))
    inks = {
        stroke: np.asarray(redrawn(images[0], stroke, "light on black", np.random.default_rng(1)), float).sum()
        for stroke in STROKES
    }
    assert inks["thinner"] < inks["as written"] < inks["bolder"]  # the same digit, its strokes thinner or bolder
