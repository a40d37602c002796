"""Draw docs/preprocessing.png: what digitlab.images.mnist_look does to an image before the model sees it.

Three inputs unlike MNIST, made from MNIST test digits: dark ink on noisy, unevenly lit paper
saved as JPEG; a thin digit small and off-centre on a large dark canvas; a drawing on a
transparent canvas. For each: the input, the ink map read_image finds, and the 28x28 image
to_mnist makes of it, beside the MNIST original.

Usage: python docs/preprocessing_figure.py [--mnist data/raw] [--output docs/preprocessing.png]
"""

import argparse
import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageFilter

from digitlab.images.mnist_look import read_image, to_mnist
from digitlab.raw.splits import load_split


def photo_like(digit: np.ndarray, rng) -> bytes:
    """Dark ink on light paper that is brighter on one side, with sensor noise, as a JPEG."""
    big = np.asarray(Image.fromarray(digit).resize((220, 220), Image.Resampling.BICUBIC), dtype=np.float32)
    canvas = np.zeros((320, 400), np.float32)
    canvas[60:280, 120:340] = big
    light = np.linspace(200, 240, canvas.shape[1])[np.newaxis, :]
    paper = light - canvas * 0.7 + rng.normal(0, 6, canvas.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=75)
    return buffer.getvalue()


def small_and_thin(digit: np.ndarray) -> Image.Image:
    """A thinner stroke, small and near a corner of a large dark canvas."""
    thin = Image.fromarray(digit).resize((90, 90), Image.Resampling.BICUBIC).filter(ImageFilter.MinFilter(3))
    canvas = Image.new("L", (400, 300))
    canvas.paste(thin, (40, 30))
    return canvas


def transparent_drawing(digit: np.ndarray) -> Image.Image:
    """Black strokes on a transparent canvas, as a drawing app saves them."""
    alpha = Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC)
    drawing = Image.new("RGBA", alpha.size, (0, 0, 0, 0))
    drawing.putalpha(alpha)
    return drawing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=Path("data/raw"))
    parser.add_argument("--output", type=Path, default=Path("docs/preprocessing.png"))
    args = parser.parse_args()
    images, labels = load_split(args.mnist, "test")
    rng = np.random.default_rng(0)
    examples = [
        ("dark ink on uneven paper, JPEG", photo_like(images[0], rng), images[0]),
        ("small, thin, off-centre", small_and_thin(images[1]), images[1]),
        ("drawn on a transparent canvas", transparent_drawing(images[2]), images[2]),
    ]

    figure, axes = plt.subplots(len(examples), 4, figsize=(11, 2.9 * len(examples)))
    for row, (title, source, original) in zip(axes, examples):
        shown = Image.open(io.BytesIO(source)) if isinstance(source, bytes) else source
        ink = read_image(source)
        panels = [
            (shown, f"input: {title}"),
            (ink, "ink map (read_image)"),
            (to_mnist(ink), "28x28 the model sees (to_mnist)"),
            (original, "the MNIST original"),
        ]
        for axis, (picture, caption) in zip(row, panels):
            axis.imshow(
                picture, cmap="gray" if not isinstance(picture, Image.Image) or picture.mode != "RGBA" else None
            )
            axis.set_title(caption, fontsize=9)
            axis.axis("off")
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=80, metadata={"Software": None})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
