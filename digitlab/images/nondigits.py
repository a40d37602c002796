"""Images that hold no digit, made here from a seed: what a "not a digit" answer is tuned and tested on.

Nothing is downloaded. Each image is one of KINDS (letters in Pillow's own font, letters, doodles and words
drawn as pen strokes by a hand, symbols, numbers of several digits, scribbles, shapes, textures, noise; the
list and its reasons are in docs/not-a-digit.md), drawn at 100-400 px, then given one of the LOOKS of users'
images: dark ink on noisy light paper as PNG or JPEG, light ink on black, or ink on a transparent canvas.
Each split (train, val, test) has its own seed (`split_seeds`) and its own hands (strokes.HANDS_OF): the
validation and test non-digits are drawn in hands training never sees. `nondigit_images(count, seed, split)`
gives the same images for the same arguments in any process; `prepared_nondigits` reads them as the reader
reads users' images, into model input (preprocess).
"""

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitlab.images import strokes
from digitlab.images.mnist_look import prepared_as_model_input
from digitlab.images.strokes import HANDS_OF, LETTERS

KINDS = (
    "letters",
    "drawn letters",
    "doodles",
    "words",
    "symbols",
    "numbers",
    "scribbles",
    "shapes",
    "textures",
    "noise",
)
# The kinds drawn as pen strokes in one of strokes.py's hands; the others are RENDERED, below, in no hand.
HAND_DRAWN = {"drawn letters": strokes.drawn_letter, "doodles": strokes.doodle, "words": strokes.word}
LOOKS = ("paper PNG", "paper JPEG", "light on black", "transparent")
SYMBOLS = "+=#@&%?!*$<>~^"


def split_seeds(seed: int) -> dict[str, int]:
    """The seeds of the three splits, distinct for every `seed`: train (for training that sees
    non-digits), val (a threshold is chosen on it) and test (read once, by evaluate)."""
    return {"train": seed * 3 + 1, "val": seed * 3 + 2, "test": seed * 3 + 3}


def nondigit_images(count: int, seed: int, split: str) -> list[tuple[Image.Image, str, str, str | None]]:
    """`count` images holding no digit for `split` (train, val or test): (image, kind, look, hand), the kinds
    and looks in turn; hand is None for the kinds that no hand draws."""
    rng = np.random.default_rng(split_seeds(seed)[split])
    hands = HANDS_OF[split]
    made = []
    for index in range(count):
        kind, look = KINDS[index % len(KINDS)], LOOKS[(index // len(KINDS)) % len(LOOKS)]
        side = int(rng.integers(100, 401))
        hand = hands[int(rng.integers(len(hands)))] if kind in HAND_DRAWN else None
        ink = HAND_DRAWN[kind](rng, side, hand) if hand else RENDERED[kind](rng, side)  # float 0..1, ink bright
        made.append((with_look(ink, look, rng), kind, look, hand))
    return made


def prepared_nondigits(count: int, seed: int, split: str) -> tuple[dict[str, np.ndarray], int]:
    """`count` non-digits as the model sees them, and how many of them the reader found blank (it
    answers those "no digit found" before the model sees them, so they are left out): {"images":
    (N, 28, 28, 1) float32, "kinds": (N,) their kinds' names, "hands": (N,) the hand that drew each, "" for
    the kinds no hand draws}."""
    made = nondigit_images(count, seed, split)
    images, found = prepared_as_model_input(image for image, *_ in made)
    kept = [entry for entry, holds_ink in zip(made, found) if holds_ink]
    return (
        {
            "images": images,
            "kinds": np.array([kind for _, kind, _, _ in kept], dtype=np.str_),
            "hands": np.array([hand or "" for _, _, _, hand in kept], dtype=np.str_),
        },
        count - len(kept),
    )


# --- The kinds: each draws an ink map, float32 in 0..1, ink bright -------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own scalable font; its bitmap font where Pillow was built without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (AttributeError, TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _text(rng: np.random.Generator, side: int, text: str) -> np.ndarray:
    """`text` at a random weight, slant and turn, filling a side x side image (the reader crops to it anyway)."""
    font = _font(int(side * rng.uniform(0.5, 0.9) / max(1, len(text) ** 0.5)))
    size = getattr(font, "size", 11)  # the bitmap font's size is fixed: the drawing is scaled below instead
    weight = int(rng.integers(0, max(1, size // 12) + 1))  # 0: the font's own strokes; more: bolder
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font, stroke_width=weight)
    margin = max(2, size // 5)
    drawn = Image.new("L", (box[2] - box[0] + 2 * margin, box[3] - box[1] + 2 * margin))
    ImageDraw.Draw(drawn).text(
        (margin - box[0], margin - box[1]), text, fill=255, font=font, stroke_width=weight, stroke_fill=255
    )
    slant = float(rng.uniform(-0.3, 0.3))  # an italic-like shear
    drawn = drawn.transform(
        drawn.size, Image.Transform.AFFINE, (1, slant, -slant * drawn.height / 2, 0, 1, 0), Image.Resampling.BILINEAR
    )
    drawn = drawn.rotate(float(rng.uniform(-20, 20)), Image.Resampling.BILINEAR, expand=True)
    scale = side / max(drawn.size)  # the text with its margin fills the image's side
    drawn = drawn.resize(
        (max(1, round(drawn.width * scale)), max(1, round(drawn.height * scale))), Image.Resampling.BILINEAR
    )
    canvas = Image.new("L", (side, side))
    canvas.paste(drawn, ((side - drawn.width) // 2, (side - drawn.height) // 2))
    return np.asarray(canvas, dtype=np.float32) / 255


def letters(rng: np.random.Generator, side: int) -> np.ndarray:
    return _text(rng, side, "".join(rng.choice(list(LETTERS), size=int(rng.integers(1, 3)))))


def symbols(rng: np.random.Generator, side: int) -> np.ndarray:
    return _text(rng, side, "".join(rng.choice(list(SYMBOLS), size=int(rng.integers(1, 3)))))


def numbers(rng: np.random.Generator, side: int) -> np.ndarray:
    return _text(rng, side, "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(2, 4)))))


def _width(rng: np.random.Generator, side: int) -> int:
    return max(2, int(side * rng.uniform(0.03, 0.08)))


def scribbles(rng: np.random.Generator, side: int) -> np.ndarray:
    canvas = Image.new("L", (side, side))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 5))):
        points = [tuple(p) for p in (rng.uniform(0.1, 0.9, size=(int(rng.integers(4, 9)), 2)) * side)]
        draw.line(points, fill=255, width=_width(rng, side), joint="curve")
    return np.asarray(canvas, dtype=np.float32) / 255


def shapes(rng: np.random.Generator, side: int) -> np.ndarray:
    canvas = Image.new("L", (side, side))
    draw = ImageDraw.Draw(canvas)
    shape = ("square", "triangle", "star", "cross", "dots")[int(rng.integers(5))]
    fill = 255 if rng.random() < 0.5 else None
    width = _width(rng, side)
    centre, radius = side / 2, side * rng.uniform(0.25, 0.4)
    turn = rng.uniform(0, 2 * math.pi)
    if shape == "dots":
        for _ in range(int(rng.integers(3, 8))):
            x, y = rng.uniform(0.15, 0.85, size=2) * side
            r = side * rng.uniform(0.03, 0.08)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    elif shape == "cross":
        for angle in (turn, turn + math.pi / 2):
            dx, dy = radius * math.cos(angle), radius * math.sin(angle)
            draw.line((centre - dx, centre - dy, centre + dx, centre + dy), fill=255, width=width * 2)
    else:
        corners = {"square": 4, "triangle": 3, "star": 10}[shape]
        points = [
            (
                centre
                + radius * (0.45 if shape == "star" and i % 2 else 1) * math.cos(turn + 2 * math.pi * i / corners),
                centre
                + radius * (0.45 if shape == "star" and i % 2 else 1) * math.sin(turn + 2 * math.pi * i / corners),
            )
            for i in range(corners)
        ]
        draw.polygon(points, fill=fill, outline=255, width=width)
    return np.asarray(canvas, dtype=np.float32) / 255


def textures(rng: np.random.Generator, side: int) -> np.ndarray:
    rows, columns = np.mgrid[:side, :side].astype(np.float32)
    period = side * rng.uniform(0.05, 0.25)
    angle = rng.uniform(0, math.pi)
    along = rows * math.cos(angle) + columns * math.sin(angle)
    across = -rows * math.sin(angle) + columns * math.cos(angle)
    pattern = ("stripes", "checks", "grid", "dots")[int(rng.integers(4))]
    if pattern == "stripes":
        ink = (along % period) < period / 2
    elif pattern == "checks":
        ink = ((along // period) + (across // period)) % 2 == 0
    elif pattern == "grid":
        ink = ((along % period) < period / 5) | ((across % period) < period / 5)
    else:
        ink = ((along % period - period / 2) ** 2 + (across % period - period / 2) ** 2) < (period / 4) ** 2
    return ink.astype(np.float32)


def noise(rng: np.random.Generator, side: int) -> np.ndarray:
    if rng.random() < 0.5:
        return rng.random((side, side), dtype=np.float32)
    coarse = rng.random((int(rng.integers(3, 12)),) * 2, dtype=np.float32)  # smooth blobs
    return (
        np.asarray(
            Image.fromarray((coarse * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC),
            dtype=np.float32,
        )
        / 255
    )


# The kinds drawn without a hand: fonts, lines, shapes, textures, noise.
RENDERED = {
    "letters": letters,
    "symbols": symbols,
    "numbers": numbers,
    "scribbles": scribbles,
    "shapes": shapes,
    "textures": textures,
    "noise": noise,
}


# --- The looks of users' images ------------------------------------------------------------------------


def with_look(ink: np.ndarray, look: str, rng: np.random.Generator) -> Image.Image:
    """An ink map as a user's image: on paper (PNG, or JPEG bytes decoded back), light on black, or transparent."""
    if look == "light on black":
        return Image.fromarray((np.clip(ink, 0, 1) * 255).astype(np.uint8))
    if look == "transparent":
        alpha = (np.clip(ink, 0, 1) * 255).astype(np.uint8)
        return Image.merge("RGBA", [Image.new("L", alpha.shape[::-1], 20)] * 3 + [Image.fromarray(alpha)])
    paper = rng.normal(220, 10, size=ink.shape)  # dark ink (about 40) on light paper (about 220, noisy)
    image = Image.fromarray(np.clip(paper * (1 - ink) + 40 * ink, 0, 255).astype(np.uint8))
    if look == "paper JPEG":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        image = Image.open(io.BytesIO(buffer.getvalue()))
        image.load()
    return image
