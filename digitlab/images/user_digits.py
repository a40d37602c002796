"""MNIST test digits as users send them: what the "not a digit" answer must not refuse.

The plain test digits are centred 20-pixel strokes on black, the look the model trained on; users send
photos, scans and drawings. Each digit here is redrawn in another hand and another look: scaled up to a
100-400 px image at 50-90% of its height, its strokes made thinner or bolder, slanted by up to 0.3
(a shear), placed off centre, then given one of the looks of users' images (digitlab/images/nondigits.py:
ink on noisy paper as PNG or JPEG, light on black, transparent), and read back as the reader reads any image
(`prepare`). evaluate reports the share refused as `reject.user_digits`, beside `reject.digits` for the
plain test digits. The same (digits, seed) give the same images in any process.
"""

import numpy as np
from PIL import Image, ImageFilter

from digitlab.images.mnist_look import prepared_as_model_input
from digitlab.images.nondigits import LOOKS, with_look

STROKES = ("thinner", "as written", "bolder")


def redrawn(digit: np.ndarray, stroke: str, look: str, rng: np.random.Generator) -> Image.Image:
    """One 28x28 MNIST digit (uint8, ink bright) in another hand and look, as a user's image."""
    side = int(rng.integers(100, 401))
    height = int(side * rng.uniform(0.5, 0.9))
    ink = Image.fromarray(digit).resize((height, height), Image.Resampling.BICUBIC)
    # Thinner or bolder strokes: a grey erosion or dilation a few pixels wide at this size.
    width = max(3, height // 40 * 2 + 1)
    if stroke == "thinner":
        ink = ink.filter(ImageFilter.MinFilter(width))
    elif stroke == "bolder":
        ink = ink.filter(ImageFilter.MaxFilter(width))
    slant = rng.uniform(-0.3, 0.3)
    ink = ink.transform(
        ink.size, Image.Transform.AFFINE, (1, slant, -slant * height / 2, 0, 1, 0), resample=Image.Resampling.BILINEAR
    )
    canvas = Image.new("L", (side, side))
    margin = side - height
    canvas.paste(ink, (int(rng.integers(0, margin + 1)), int(rng.integers(0, margin + 1))))
    return with_look(np.asarray(canvas, dtype=np.float64) / 255, look, rng)


def user_digits(images: np.ndarray, labels: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """The digits redrawn as users' images and read back as model input, each stroke and look in turn, and how
    many the reader found blank (left out): {"images": (N, 28, 28, 1) float32, "labels", "looks"}."""
    rng = np.random.default_rng(seed)
    looks = [LOOKS[index % len(LOOKS)] for index in range(len(images))]
    strokes = [STROKES[(index // len(LOOKS)) % len(STROKES)] for index in range(len(images))]
    drawn = (redrawn(digit, stroke, look, rng) for digit, stroke, look in zip(images, strokes, looks))
    model_input, found = prepared_as_model_input(drawn)
    return (
        {
            "images": model_input,
            "labels": np.asarray(labels, dtype=np.int64)[found],
            "looks": np.array([look for look, holds_ink in zip(looks, found) if holds_ink], dtype=np.str_),
        },
        len(images) - int(found.sum()),
    )
