"""What people draw and write that is not a digit, as pen strokes in many hands.

The letters of `nondigits.py`'s "letters" kind come in one font; people draw letters, faces and words with
a pen, a finger or a mouse. Here each shape is a list of strokes (polylines) in a unit box, and a *hand*
draws them: its pen's width and how the width follows the pressure, how its strokes wobble and shake,
how far it slants, whether it goes over a stroke twice or leaves gaps. Three kinds come from here:

  drawn letters  one capital or small letter, the same letters as the "letters" kind (`LETTERS`:
                 those most hands write like a digit, O, l, S, Z, b, g, q..., left out)
  doodles        a smiley, a heart, a star, an arrow, a tick, a house, a sun, a flower, a cloud, a
                 lightning bolt, a fish, a moon
  words          two to five letters, in small letters or capitals

The hands are split: training, validation and test each draw with hands the others never use
(`HANDS_OF`), so the share of test non-digits refused says how the model does on a hand it has not seen,
not how well it remembers this generator.
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Stroke = list[tuple[float, float]]


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> Stroke:
    """Points along an ellipse from angle `start` to `end` (degrees; 0 is right, 90 down: y grows downwards)."""
    steps = max(4, int(abs(end - start) / 10))
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(start, end, steps + 1)
    ]


def circle(cx: float, cy: float, rx: float, ry: float) -> Stroke:
    return arc(cx, cy, rx, ry, 0, 360)


# --- Letters: strokes in a box with the capitals' height 1 (y from 0 at the top to 1 on the baseline) -------
# Small letters stand between 0.45 (their top) and 1, with ascenders from 0 and descenders to 1.35.
# Each is (width, strokes).

_X = 0.725  # the middle of a small letter's bowl
_BOWL = (0.25, _X, 0.25, 0.275)  # centre and radii of a small letter's round part (a, b, d, g, o, p)

GLYPHS: dict[str, tuple[float, list[Stroke]]] = {
    "A": (0.7, [[(0, 1), (0.35, 0), (0.7, 1)], [(0.14, 0.62), (0.56, 0.62)]]),
    "C": (0.7, [arc(0.4, 0.5, 0.38, 0.5, 315, 45)]),
    "E": (0.6, [[(0.6, 0), (0, 0), (0, 1), (0.6, 1)], [(0, 0.5), (0.45, 0.5)]]),
    "F": (0.6, [[(0.6, 0), (0, 0), (0, 1)], [(0, 0.5), (0.45, 0.5)]]),
    "H": (0.7, [[(0, 0), (0, 1)], [(0.7, 0), (0.7, 1)], [(0, 0.5), (0.7, 0.5)]]),
    "J": (0.55, [[(0.55, 0), (0.55, 0.7)] + arc(0.3, 0.7, 0.25, 0.3, 0, 170)]),
    "K": (0.65, [[(0, 0), (0, 1)], [(0.65, 0), (0, 0.55)], [(0.2, 0.4), (0.65, 1)]]),
    "L": (0.55, [[(0, 0), (0, 1), (0.55, 1)]]),
    "M": (0.8, [[(0, 1), (0, 0), (0.4, 0.6), (0.8, 0), (0.8, 1)]]),
    "N": (0.7, [[(0, 1), (0, 0), (0.7, 1), (0.7, 0)]]),
    "P": (0.6, [[(0, 1), (0, 0), (0.35, 0)] + arc(0.35, 0.25, 0.25, 0.25, 270, 450) + [(0, 0.5)]]),
    "R": (
        0.6,
        [[(0, 1), (0, 0), (0.35, 0)] + arc(0.35, 0.25, 0.25, 0.25, 270, 450) + [(0, 0.5)], [(0.3, 0.5), (0.62, 1)]],
    ),
    "T": (0.7, [[(0, 0), (0.7, 0)], [(0.35, 0), (0.35, 1)]]),
    "U": (0.65, [[(0, 0), (0, 0.65)] + arc(0.325, 0.65, 0.325, 0.35, 180, 0) + [(0.65, 0)]]),
    "V": (0.7, [[(0, 0), (0.35, 1), (0.7, 0)]]),
    "W": (0.9, [[(0, 0), (0.22, 1), (0.45, 0.3), (0.68, 1), (0.9, 0)]]),
    "X": (0.7, [[(0, 0), (0.7, 1)], [(0.7, 0), (0, 1)]]),
    "Y": (0.7, [[(0, 0), (0.35, 0.5), (0.7, 0)], [(0.35, 0.5), (0.35, 1)]]),
    "a": (0.5, [circle(*_BOWL), [(0.5, 0.45), (0.5, 1)]]),
    "b": (0.5, [[(0, 0), (0, 1)], circle(*_BOWL)]),
    "c": (0.45, [arc(0.25, _X, 0.23, 0.275, 315, 45)]),
    "d": (0.5, [circle(*_BOWL), [(0.5, 0), (0.5, 1)]]),
    "e": (0.5, [[(0.02, _X), (0.49, _X)] + arc(0.25, _X, 0.24, 0.275, 360, 40)]),
    "f": (0.4, [arc(0.3, 0.18, 0.15, 0.16, 330, 180) + [(0.15, 1)], [(0, 0.45), (0.35, 0.45)]]),
    "g": (0.5, [circle(*_BOWL), [(0.5, 0.45), (0.5, 1.15)] + arc(0.25, 1.15, 0.25, 0.2, 0, 160)]),
    "h": (0.5, [[(0, 0), (0, 1)], [(0, 0.65)] + arc(0.25, 0.65, 0.25, 0.2, 180, 360) + [(0.5, 1)]]),
    "i": (0.1, [[(0.05, 0.45), (0.05, 1)], [(0.05, 0.25), (0.06, 0.27)]]),
    "k": (0.45, [[(0, 0), (0, 1)], [(0.45, 0.45), (0, 0.75), (0.45, 1)]]),
    "l": (0.1, [[(0.05, 0), (0.05, 1)]]),
    "m": (
        0.8,
        [
            [(0, 0.45), (0, 1)],
            [(0, 0.62)] + arc(0.2, 0.62, 0.2, 0.17, 180, 360) + [(0.4, 1)],
            [(0.4, 0.62)] + arc(0.6, 0.62, 0.2, 0.17, 180, 360) + [(0.8, 1)],
        ],
    ),
    "n": (0.5, [[(0, 0.45), (0, 1)], [(0, 0.65)] + arc(0.25, 0.65, 0.25, 0.2, 180, 360) + [(0.5, 1)]]),
    "o": (0.5, [circle(*_BOWL)]),
    "p": (0.5, [[(0, 0.45), (0, 1.35)], circle(*_BOWL)]),
    "r": (0.4, [[(0, 0.45), (0, 1)], [(0, 0.7)] + arc(0.22, 0.68, 0.22, 0.2, 180, 300)]),
    "s": (0.45, [arc(0.22, 0.59, 0.2, 0.14, 330, 90) + arc(0.22, 0.86, 0.22, 0.14, 270, 510)]),
    "t": (0.4, [[(0.15, 0.15), (0.15, 0.95), (0.35, 1)], [(0, 0.45), (0.35, 0.45)]]),
    "u": (0.5, [[(0, 0.45), (0, 0.8)] + arc(0.25, 0.8, 0.25, 0.2, 180, 0), [(0.5, 0.45), (0.5, 1)]]),
    "v": (0.5, [[(0, 0.45), (0.25, 1), (0.5, 0.45)]]),
    "w": (0.7, [[(0, 0.45), (0.17, 1), (0.35, 0.6), (0.53, 1), (0.7, 0.45)]]),
    "x": (0.5, [[(0, 0.45), (0.5, 1)], [(0.5, 0.45), (0, 1)]]),
    "y": (0.5, [[(0, 0.45), (0.25, 1)], [(0.5, 0.45), (0.15, 1.35)]]),
}
# The letters drawn alone, here and in Pillow's font (nondigits.py): not those most hands write like a digit
# (O for 0, I and l for 1, S for 5, Z for 2, B for 8, G and b for 6, g and q for 9...), which are not errors
# either way. Words use every letter of GLYPHS.
LETTERS = "ACEFHJKLMNPRTUVWXYadefhkmnprtuvwxy"
WORDS = (
    "cat",
    "dog",
    "hi",
    "yes",
    "no",
    "ok",
    "sun",
    "hello",
    "abc",
    "the",
    "mom",
    "tree",
    "fish",
    "love",
    "box",
    "hat",
    "pen",
    "sky",
    "red",
    "bye",
    "way",
    "run",
    "art",
    "map",
    "toy",
    "bed",
    "cow",
    "pig",
    "hey",
    "wow",
    "fun",
    "kid",
    "net",
    "web",
    "ink",
    "HEY",
    "THE",
    "YAK",
    "MAP",
    "NET",
    "HAT",
    "WAX",
    "TAX",
    "CAR",
    "FAN",
    "ART",
    "MAX",
    "ANNA",
)


def written(text: str) -> list[Stroke]:
    """The strokes of `text`, letter after letter, with a small gap between them."""
    strokes, x = [], 0.0
    for letter in text:
        width, glyph = GLYPHS[letter]
        strokes += [[(x + px, py) for px, py in stroke] for stroke in glyph]
        x += width + 0.18
    return strokes


# --- Doodles: strokes in a unit box --------------------------------------------------------------------


def _smiley() -> list[Stroke]:
    return [
        circle(0.5, 0.5, 0.45, 0.45),
        [(0.35, 0.35), (0.36, 0.37)],
        [(0.65, 0.35), (0.66, 0.37)],
        arc(0.5, 0.55, 0.25, 0.2, 20, 160),
    ]


def _heart() -> list[Stroke]:
    t = np.linspace(0, 2 * math.pi, 60)
    x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [list(zip((x + 17) / 34, (y + 17) / 34))]


def _star() -> list[Stroke]:
    return [
        [(0.5 + 0.5 * math.sin(math.radians(144 * i)), 0.5 - 0.5 * math.cos(math.radians(144 * i))) for i in range(6)]
    ]


def _arrow() -> list[Stroke]:
    return [[(0, 0.5), (1, 0.5)], [(0.7, 0.25), (1, 0.5), (0.7, 0.75)]]


def _tick() -> list[Stroke]:
    return [[(0, 0.55), (0.35, 0.9), (1, 0)]]


def _house() -> list[Stroke]:
    return [[(0.1, 0.45), (0.1, 1), (0.9, 1), (0.9, 0.45)], [(0, 0.5), (0.5, 0), (1, 0.5)]]


def _sun() -> list[Stroke]:
    rays = [
        [(0.5 + 0.3 * math.cos(a), 0.5 + 0.3 * math.sin(a)), (0.5 + 0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a))]
        for a in np.linspace(0, 2 * math.pi, 9)[:-1]
    ]
    return [circle(0.5, 0.5, 0.2, 0.2)] + rays


def _flower() -> list[Stroke]:
    petals = [
        circle(0.5 + 0.3 * math.cos(a), 0.4 + 0.3 * math.sin(a), 0.13, 0.13)
        for a in np.linspace(0, 2 * math.pi, 6)[:-1]
    ]
    return [circle(0.5, 0.4, 0.1, 0.1), [(0.5, 0.55), (0.5, 1)]] + petals


def _cloud() -> list[Stroke]:
    return [
        arc(0.2, 0.6, 0.18, 0.18, 90, 270)
        + arc(0.45, 0.42, 0.22, 0.22, 190, 340)
        + arc(0.78, 0.6, 0.2, 0.18, 240, 450)
        + [(0.2, 0.78)]
    ]


def _lightning() -> list[Stroke]:
    return [[(0.6, 0), (0.25, 0.55), (0.6, 0.5), (0.35, 1)]]


def _fish() -> list[Stroke]:
    return [
        arc(0.4, 0.5, 0.35, 0.25, -150, 150),
        [(0.7, 0.4), (1, 0.15), (1, 0.85), (0.7, 0.6)],
        [(0.25, 0.42), (0.26, 0.44)],
    ]


def _moon() -> list[Stroke]:
    return [arc(0.5, 0.5, 0.45, 0.45, 60, 300) + arc(0.75, 0.5, 0.35, 0.45, 240, 120)]


DOODLES = {
    "smiley": _smiley,
    "heart": _heart,
    "star": _star,
    "arrow": _arrow,
    "tick": _tick,
    "house": _house,
    "sun": _sun,
    "flower": _flower,
    "cloud": _cloud,
    "lightning": _lightning,
    "fish": _fish,
    "moon": _moon,
}


# --- Hands -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hand:
    """How a hand draws. Shares are of the drawing's height; ranges are drawn from for each drawing."""

    width: tuple[float, float]  # the pen's width
    wobble: float  # slow drift from the ideal line
    slant: tuple[float, float]  # the shear (positive leans right)
    ink: tuple[float, float]  # the darkest the ink gets (pencil is grey)
    pressure: float = 0.0  # how much the width swells and thins along a stroke (0: a steady pen)
    shake: float = 0.0  # a quick tremor
    passes: int = 1  # strokes gone over this many times
    gaps: float = 0.0  # the chance of a dry-pen gap starting at each point


HANDS = {
    "ballpoint": Hand(width=(0.03, 0.06), wobble=0.01, slant=(-0.1, 0.3), ink=(0.9, 1.0)),
    "marker": Hand(width=(0.1, 0.18), wobble=0.015, slant=(-0.15, 0.2), ink=(0.95, 1.0)),
    "finger": Hand(width=(0.07, 0.13), wobble=0.04, slant=(-0.25, 0.25), ink=(0.95, 1.0), shake=0.003),
    "pencil": Hand(width=(0.04, 0.08), wobble=0.015, slant=(0.0, 0.35), ink=(0.55, 0.85), pressure=0.3, shake=0.004),
    "hurried": Hand(width=(0.05, 0.1), wobble=0.035, slant=(0.25, 0.55), ink=(0.9, 1.0), pressure=0.2),
    "brush": Hand(width=(0.05, 0.11), wobble=0.02, slant=(-0.2, 0.2), ink=(0.9, 1.0), pressure=0.6),
    "shaky": Hand(width=(0.05, 0.1), wobble=0.02, slant=(-0.2, 0.3), ink=(0.85, 1.0), pressure=0.1, shake=0.015),
    "sketchy": Hand(
        width=(0.025, 0.05), wobble=0.03, slant=(-0.15, 0.3), ink=(0.8, 1.0), pressure=0.1, shake=0.003, passes=3
    ),
    "dry pen": Hand(
        width=(0.06, 0.12), wobble=0.015, slant=(-0.2, 0.3), ink=(0.85, 1.0), pressure=0.2, shake=0.002, gaps=0.08
    ),
}
# No hand in two splits: validation and test measure hands that training never saw.
HANDS_OF = {
    "train": ("ballpoint", "marker", "finger", "pencil", "hurried"),
    "val": ("brush", "shaky"),
    "test": ("sketchy", "dry pen"),
}


def _drift(rng: np.random.Generator, length: int, amplitude: float, waves: float) -> np.ndarray:
    """A smooth random displacement along `length` points: a few sines of random phase, `waves` periods long."""
    t = np.linspace(0, 1, length)
    return sum(amplitude / k * np.sin(2 * math.pi * (waves * k * t + rng.random())) for k in (1, 2, 3))


def _dense(stroke: Stroke, step: float) -> np.ndarray:
    """The stroke's points at most `step` apart, so that a wobble bends the straight parts too."""
    points = np.asarray(stroke, dtype=np.float64)
    parts = [points[:1]]
    for start, end in zip(points[:-1], points[1:]):
        count = max(1, int(math.ceil(np.linalg.norm(end - start) / step)))
        parts.append(start + (end - start) * (np.arange(1, count + 1)[:, None] / count))
    return np.concatenate(parts)


def drawn(strokes: list[Stroke], hand: str, rng: np.random.Generator, side: int) -> np.ndarray:
    """The strokes drawn by `hand` on a side x side ink map (float32 in 0..1, ink bright): slanted and turned a
    little, wobbling, at 45-90% of the side and off centre."""
    style = HANDS[hand]
    slant, turn = rng.uniform(*style.slant), math.radians(rng.uniform(-12, 12))
    squeeze = rng.uniform(0.85, 1.15)  # wider or narrower than the model strokes
    shapes = []
    for stroke in strokes:
        for _ in range(style.passes):
            points = _dense(stroke, 0.02)
            for axis in (0, 1):
                points[:, axis] += _drift(rng, len(points), style.wobble, rng.uniform(0.5, 1.5))
                points[:, axis] += rng.normal(0, style.shake, len(points)) if style.shake else 0
            if style.passes > 1:  # going over a stroke again, never quite on the same line
                points += rng.normal(0, 0.02, 2)
            x, y = points[:, 0] * squeeze - slant * (points[:, 1] - 0.5), points[:, 1]
            shapes.append(
                np.stack([x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn)], axis=1)
            )
    every = np.concatenate(shapes)
    low, high = every.min(axis=0), every.max(axis=0)
    height = max(high[1] - low[1], 0.2)
    scale = side * rng.uniform(0.45, 0.9) / max(high[0] - low[0], high[1] - low[1], 0.2)
    offset = rng.uniform(0, 1, 2) * np.maximum(side - (high - low) * scale, 0)

    canvas = Image.new("L", (side, side))
    pen = ImageDraw.Draw(canvas)
    width = rng.uniform(*style.width) * height * scale
    ink = int(255 * rng.uniform(*style.ink))
    for shape in shapes:
        points = (shape - low) * scale + offset
        swell = 1 + style.pressure * _drift(rng, len(points), 1.0, rng.uniform(0.3, 1.0))
        # A dry pen skips: gaps of 3-6 points (longer than the pen is wide) start at random points. The draws are
        # made for every hand, so that a hand without gaps draws the same strokes from the same seed.
        starts, lengths = rng.random(len(points)) < style.gaps, rng.integers(3, 7, len(points))
        dry = np.zeros(len(points), bool)
        for start in np.flatnonzero(starts):
            dry[start : start + lengths[start]] = True
        for (x0, y0), (x1, y1), grow, skipped in zip(points[:-1], points[1:], swell[1:], dry[1:]):
            if skipped:
                continue
            radius = max(0.5, width * max(grow, 0.25) / 2)
            pen.line((x0, y0, x1, y1), fill=ink, width=max(1, round(2 * radius)))
            pen.ellipse((x1 - radius, y1 - radius, x1 + radius, y1 + radius), fill=ink)  # a round pen
        x0, y0 = points[0]
        radius = max(0.5, width / 2)
        pen.ellipse((x0 - radius, y0 - radius, x0 + radius, y0 + radius), fill=ink)
    return np.asarray(canvas, dtype=np.float32) / 255


def drawn_letter(rng: np.random.Generator, side: int, hand: str) -> np.ndarray:
    return drawn(written(LETTERS[int(rng.integers(len(LETTERS)))]), hand, rng, side)


def doodle(rng: np.random.Generator, side: int, hand: str) -> np.ndarray:
    names = sorted(DOODLES)
    return drawn(DOODLES[names[int(rng.integers(len(names)))]](), hand, rng, side)


def word(rng: np.random.Generator, side: int, hand: str) -> np.ndarray:
    return drawn(written(WORDS[int(rng.integers(len(WORDS)))]), hand, rng, side)
