"""The 15 corruptions of MNIST-C (Mu and Gilmer 2019, "MNIST-C: A Robustness Benchmark for Computer
Vision", arXiv:1906.02337), applied to MNIST test digits from a fixed seed.

Each follows google-research/mnist-c, corruptions.py (commit aa07569), at the severity that file gives
the function as its default argument: the released MNIST-C data set has one severity per corruption,
and the repository's notebook calls each function with the image alone. Setting, and where it is:

    shot_noise     severity 5 of [60, 25, 12, 5, 3]: Poisson noise of 3 photons per unit of brightness
    impulse_noise  severity 4 of [.03, .06, .09, .17, .27]: 17% of pixels set to black or white,
                   half each (skimage.util.random_noise, mode "s&p", as the original)
    glass_blur     severity 1 of [(.7, 1, 2), ...]: Gaussian blur sigma 0.7, then 2 sweeps swapping
                   each pixel, with probability 1/2, with the one above, left or up-left of it, then
                   the blur again
    motion_blur    severity 1 of [(10, 3), ...]: ImageMagick's MotionBlurImage, radius 10, sigma 3, at
                   an angle uniform in [-45, 45) degrees
    shear          severity 2 of [.2, .4, .6, .8, 1]: shear 0.4 rad, either way, about the centre
    scale          severity 3 of [1/.9, 1/.8, 1/.7, ...]: the digit shrunk to 0.7 of its size, about the
                   centre
    rotate         severity 2 of [.2, .4, .6, .8, 1]: rotation by 0.4 rad (22.9 degrees), either way,
                   about the centre
    brightness     severity 5 of [.1, .2, .3, .4, .5]: +0.5 on the HSV value channel
    translate      severity 3 of [1, 2, 3, 4, 5]: moved 3 pixels along each axis, each way at random
    stripe         no parameter: the 7 columns at each side inverted
    fog            severity 5 of [(1.5, 2), ...]: 3 times a plasma fractal (wibble decay 1.4) added
    spatter        severity 4 of [..., (.65, .3, 1, .65, 1.5, 1), ...]: mud blots of grey 63
    dotted_line    no parameter: a dotted line across the image, from and to random rows
    zigzag         no parameter: a zigzag (legs 2 long and 2 wide) from column 2 to 25 at a random row
    canny_edges    no parameter: skimage.feature.canny at its defaults (sigma 1)

The original works on one uint8 PIL image (0-255) at a time, with NumPy's global random state and, for
motion blur, Wand/ImageMagick. Here: a batch at once, images (N, 28, 28, 1) float32 in [0, 1] that are
uint8 levels divided by 255, one `numpy.random.Generator` seeded from (seed, corruption), and NumPy,
SciPy and scikit-image only. Each corruption below takes (N, 28, 28) float64 in [0, 1] (the original's
`np.array(x) / 255.`) and returns the same range; `corrupt` rounds the result to the nearest of the 256
levels that the released data set stores (uint8), then divides by 255 again.

What differs from the original, on purpose or of necessity:
- The random numbers: a different generator, drawn in a different order (batched), so the same
  distribution but not the released data set's images.
- motion_blur re-implements ImageMagick's kernel (MagickCore/effect.c, MotionBlurImage): a one-sided
  Gaussian of 21 taps along the angle, each tap read at its offset rounded to whole pixels, the edge
  pixel repeated beyond the border (ImageMagick's default virtual pixels). ImageMagick rounds to its
  16-bit quantum before the 8-bit PNG is written; here the result is rounded once, so a pixel can
  differ by one grey level.
- glass_blur and shear keep two quirks of the scikit-image of 2019 the original ran on:
  `gaussian(x, sigma, multichannel=True)` on a 2-D image took the columns for colour channels and blurred
  along the rows only (down the image), and `AffineTransform(shear=s)` was [[1, -sin s], [0, cos s]]
  (today's scikit-image defines shear otherwise), so the transforms' matrices are written out here.
- The original returns float 0-255; the released files are uint8, and the repository does not say
  whether they were rounded or truncated. Here they are rounded.
- fog's fractal is computed in float32 rather than float64, for speed.
- brightness is written as min(x + 0.5, 1): the original's HSV round trip on a grey image (hue and
  saturation 0, value x, then back to grey with weights summing to 1) is exactly that.
"""

from digitlab.shared.mnist import IMAGE_SIZE

import numpy as np
from scipy import ndimage
from skimage import feature, util

CORRUPTIONS: tuple[str, ...] = (
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
)

CENTRE = (IMAGE_SIZE - 1) / 2  # 13.5: the transforms keep the image's centre fixed


def corrupt(images: np.ndarray, name: str, seed: int) -> np.ndarray:
    """`images` (N, 28, 28, 1) float32 in [0, 1] (white digits on black, uint8 levels / 255), each
    corrupted by `name` (one of CORRUPTIONS), as float32 (N, 28, 28, 1) on the same 256 levels. The
    same (images, name, seed) gives the same bytes, in any process; `seed` is a non-negative integer."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}")
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
        raise ValueError(f"expected images of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1), got {images.shape}")
    if len(images) == 0:
        return images.astype(np.float32, copy=True)
    # Its own stream for each corruption, so that two corruptions with one seed are independent.
    rng = np.random.default_rng([seed, CORRUPTIONS.index(name)])
    levels = np.round(images[..., 0].astype(np.float64) * 255)  # the original's uint8 image
    corrupted = _FUNCTIONS[name](levels / 255, rng)
    return (np.round(np.clip(corrupted, 0, 1) * 255) / 255).astype(np.float32)[..., None]


# ---------------------------------------------------------------- noise


def shot_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    photons = 3
    return np.clip(rng.poisson(x * photons) / photons, 0, 1)


def impulse_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return util.random_noise(x, mode="s&p", amount=0.17, rng=rng)


# ---------------------------------------------------------------- blur


def _blur_down(x: np.ndarray, sigma: float) -> np.ndarray:
    """The original's `gaussian(x, sigma, multichannel=True)` on one 2-D image: down the columns only."""
    return ndimage.gaussian_filter1d(x, sigma, axis=1, mode="nearest", truncate=4.0)


def glass_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma, max_delta, sweeps = 0.7, 1, 2
    levels = np.floor(_blur_down(x, sigma) * 255)  # np.uint8() in the original: truncated
    pixels = levels.reshape(len(x), IMAGE_SIZE * IMAGE_SIZE)
    # The original visits (row, column) from (27, 27) back to (2, 2), row by row, and with probability
    # 1/2 swaps that pixel with the one at (row + dy, column + dx), dx and dy from randint(-1, 1): -1 or
    # 0, so always with a neighbour above or to the left (never column 0), and a pixel swapped up or left
    # can be swapped again later in the sweep. The draws do not depend on the image, so they are made
    # first and the swaps done for the whole batch at once, in the original's order.
    visits = [
        (row, column)
        for _ in range(sweeps)
        for row in range(IMAGE_SIZE - max_delta, max_delta, -1)
        for column in range(IMAGE_SIZE - max_delta, max_delta, -1)
    ]
    swapping = rng.random((len(visits), len(x))) < 0.5
    dx, dy = rng.integers(-max_delta, max_delta, size=(2, len(visits), len(x)))
    every = np.arange(len(x))
    for step, (row, column) in enumerate(visits):
        here = row * IMAGE_SIZE + column
        there = np.where(swapping[step], here + dy[step] * IMAGE_SIZE + dx[step], here)
        moving = pixels[:, here].copy()
        pixels[:, here] = pixels[every, there]
        pixels[every, there] = moving
    return np.clip(_blur_down(pixels.reshape(x.shape) / 255, sigma), 0, 1)


def motion_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = 10, 3
    angle = np.deg2rad(rng.uniform(-45, 45, size=len(x)))
    taps = np.arange(2 * radius + 1)  # ImageMagick's kernel width for a radius: 2 ceil(radius) + 1
    weights = np.exp(-(taps**2) / (2 * sigma**2))
    weights /= weights.sum()
    # Offset of each tap, rounded to whole pixels as ImageMagick does: ceil(t cos(angle) - 0.5).
    across = np.ceil(taps * np.cos(angle)[:, None] - 0.5).astype(int)[:, :, None, None]
    down = np.ceil(taps * np.sin(angle)[:, None] - 0.5).astype(int)[:, :, None, None]
    rows = np.arange(IMAGE_SIZE)[:, None]
    columns = np.arange(IMAGE_SIZE)[None, :]
    every = np.arange(len(x))[:, None, None]
    blurred = np.zeros_like(x)
    for tap, weight in enumerate(weights):
        blurred += (
            weight
            * x[
                every,
                np.clip(rows + down[:, tap], 0, IMAGE_SIZE - 1),
                np.clip(columns + across[:, tap], 0, IMAGE_SIZE - 1),
            ]
        )
    return blurred


# ---------------------------------------------------------------- affine transforms


def _warp(x: np.ndarray, matrices: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
    """skimage.transform.warp(image, inverse_map=affine) for each image, as the original: the output
    pixel at (column, row) p is the input at matrix @ p + shift, bilinear, black outside. `matrices`
    (N, 2, 2) on (column, row); without `shifts`, the one that keeps the centre (13.5, 13.5) fixed,
    as the original computes it."""
    if shifts is None:
        shifts = CENTRE * (1 - matrices.sum(axis=2))
    rows, columns = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)
    source_columns = (
        matrices[:, 0, 0, None, None] * columns + matrices[:, 0, 1, None, None] * rows + shifts[:, 0, None, None]
    )
    source_rows = (
        matrices[:, 1, 0, None, None] * columns + matrices[:, 1, 1, None, None] * rows + shifts[:, 1, None, None]
    )
    image_index = np.broadcast_to(np.arange(len(x), dtype=np.float64)[:, None, None], source_rows.shape)
    # "grid-constant": samples that straddle the border mix in the black outside, as skimage's warp.
    warped = ndimage.map_coordinates(
        x, [image_index, source_rows, source_columns], order=1, mode="grid-constant", cval=0.0
    )
    return np.clip(warped, 0, 1)


def _either_way(rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
    return rng.choice([-1, 1], size=size)


def shear(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # AffineTransform(shear=angle) as scikit-image defined it in 2019: [[1, -sin], [0, cos]].
    angle = 0.4 * _either_way(rng, len(x))
    matrices = np.zeros((len(x), 2, 2))
    matrices[:, 0, 0] = 1
    matrices[:, 0, 1] = -np.sin(angle)
    matrices[:, 1, 1] = np.cos(angle)
    return _warp(x, matrices)


def scale(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # The inverse map reads the input 1/0.7 times as far from the centre: the digit shrinks to 0.7.
    matrices = np.broadcast_to(np.eye(2) / 0.7, (len(x), 2, 2))
    return _warp(x, matrices)


def rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = 0.4 * _either_way(rng, len(x))
    cos, sin = np.cos(angle), np.sin(angle)
    matrices = np.stack([np.stack([cos, -sin], axis=1), np.stack([sin, cos], axis=1)], axis=1)
    return _warp(x, matrices)


def translate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shifts = 3.0 * _either_way(rng, (len(x), 2))  # (columns, rows) read from: the digit moves the other way
    return _warp(x, np.broadcast_to(np.eye(2), (len(x), 2, 2)), shifts)


# ---------------------------------------------------------------- brightness and inversion


def brightness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x + 0.5, 0, 1)


def stripe(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    striped = x.copy()
    striped[:, :, :7] = 1 - x[:, :, :7]
    striped[:, :, 21:] = 1 - x[:, :, 21:]
    return striped


# ---------------------------------------------------------------- weather


def _plasma_fractal(
    count: int, rng: np.random.Generator, wibble_decay: float, size: int = 256, batch: int = 32
) -> np.ndarray:
    """The top-left 28 x 28 of `count` maps made by the original's plasma_fractal (diamond-square,
    after FLHerne/mapgen), each map `size` x `size` and scaled to [0, 1] as a whole. In float32 and
    `batch` maps at a time: the 65,535 random numbers of each map make this the slowest corruption."""
    maps = []
    for start in range(0, count, batch):
        heights = np.empty((min(batch, count - start), size, size), dtype=np.float32)
        heights[:, 0, 0] = 0
        step, wibble = size, 100.0
        while step >= 2:
            half = step // 2
            # Squares: each centre is the mean of its 4 corners, plus noise (the map wraps around).
            corners = heights[:, 0:size:step, 0:size:step]
            total = corners + np.roll(corners, -1, axis=1)
            total += np.roll(total, -1, axis=2)
            heights[:, half:size:step, half:size:step] = _wibbled_mean(total, wibble, rng)
            # Diamonds: each edge midpoint is the mean of the 2 corners and the 2 centres beside it.
            centres = heights[:, half:size:step, half:size:step]
            heights[:, 0:size:step, half:size:step] = _wibbled_mean(
                centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2), wibble, rng
            )
            heights[:, half:size:step, 0:size:step] = _wibbled_mean(
                centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1), wibble, rng
            )
            step //= 2
            wibble /= wibble_decay
        lowest = heights.min(axis=(1, 2), keepdims=True)
        highest = heights.max(axis=(1, 2), keepdims=True)
        maps.append((heights[:, :IMAGE_SIZE, :IMAGE_SIZE] - lowest) / (highest - lowest))
    return np.concatenate(maps).astype(np.float64)


def _wibbled_mean(total: np.ndarray, wibble: float, rng: np.random.Generator) -> np.ndarray:
    """The original's wibbledmean: total / 4 + wibble * uniform(-wibble, wibble)."""
    return total / 4 + wibble * wibble * (2 * rng.random(total.shape, dtype=np.float32) - 1)


def fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    strength, wibble_decay = 3.0, 1.4
    brightest = x.max(axis=(1, 2), keepdims=True)
    fogged = x + strength * _plasma_fractal(len(x), rng, wibble_decay)
    return np.clip(fogged * brightest / (brightest + strength), 0, 1)


def spatter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mean, spread, sigma, threshold, mud_sigma = 0.65, 0.3, 1, 0.65, 1.5
    liquid = rng.normal(mean, spread, size=x.shape)
    liquid = ndimage.gaussian_filter(liquid, (0, sigma, sigma), mode="nearest", truncate=4.0)
    wet = (liquid > threshold).astype(np.float32)
    mud = ndimage.gaussian_filter(wet, (0, mud_sigma, mud_sigma), mode="nearest", truncate=4.0)
    mud[mud < 0.8] = 0
    return np.clip(x * (1 - mud) + 63 / 255 * mud, 0, 1)


# ---------------------------------------------------------------- occlusion


def _lines(c0: np.ndarray, r0: np.ndarray, c1: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """The original's line_from_points for each image: a line through (column c0, row r0) and (c1, r1),
    drawn over columns floor(c0) to ceil(c1) (exclusive), 1 on the line fading to 0 at 1.45 pixels
    (log(1 - d / 2.3) + 1). Never given c1 == c0, for which the original draws nothing."""
    columns = np.arange(IMAGE_SIZE, dtype=np.float64)[None, None, :]
    rows = np.arange(IMAGE_SIZE, dtype=np.float64)[None, :, None]
    c0, r0, c1, r1 = (np.asarray(value, dtype=np.float64)[:, None, None] for value in (c0, r0, c1, r1))
    line_rows = (r1 - r0) / (c1 - c0) * (columns - c0) + r0
    distance = np.clip(np.abs(rows - line_rows), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - distance / 2.3) + 1, 0, 1)
    return np.where((columns >= np.floor(c0)) & (columns < np.ceil(c1)), line, 0)


def dotted_line(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r0, r1 = rng.integers(0, 27, size=(2, len(x)))
    line = _lines(np.zeros(len(x)), r0, np.full(len(x), 27.0), r1)
    for start in range(0, IMAGE_SIZE - 2, 4):  # the dashes: columns 0-1, 4-5, ... 24-25 left blank
        line[:, :, start : start + 2] = 0
    return np.clip(x + line, 0, 1)


def zigzag(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    length = width = 2.0  # a and b in the original
    first, last = 2, 25
    r0 = rng.integers(0, 27, size=len(x))
    r1 = r0 + rng.integers(-5, 5, size=len(x))
    theta = np.arctan((r1 - r0) / (last - first))
    span = (last - first) / np.cos(theta)  # d: from 23 to 23.5 pixels
    # The legs along the line before it is turned by theta: (0, 0), then ((2i + 1) a, (-1)^i b) while
    # they fit, then a last point at (d, r / (2 (d - m))), the original's end. For the spans that
    # theta allows there are always 6 legs, so the endpoints are one array for the whole batch.
    legs = int((span.min() - length) // (2 * length)) + 1
    assert legs == int((span.max() - length) // (2 * length)) + 1
    leg = np.arange(legs)
    whole = 2 * length * (span // (2 * length))
    along = np.concatenate(
        [np.zeros((len(x), 1)), np.broadcast_to((2 * leg + 1) * length, (len(x), legs)), span[:, None]], axis=1
    )
    last_side = (-1) ** (legs - 1) * width
    side = np.concatenate(
        [
            np.zeros((len(x), 1)),
            np.broadcast_to((-1.0) ** leg * width, (len(x), legs)),
            (last_side / (2 * (span - whole)))[:, None],
        ],
        axis=1,
    )
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    columns = cos * along - sin * side + first
    rows = sin * along + cos * side + r0[:, None]
    for point in range(1, columns.shape[1]):
        x = np.clip(x + _lines(columns[:, point - 1], rows[:, point - 1], columns[:, point], rows[:, point]), 0, 1)
    return x


def canny_edges(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.stack([feature.canny(image) for image in x]).astype(np.float64)


_FUNCTIONS = {
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "shear": shear,
    "scale": scale,
    "rotate": rotate,
    "brightness": brightness,
    "translate": translate,
    "stripe": stripe,
    "fog": fog,
    "spatter": spatter,
    "dotted_line": dotted_line,
    "zigzag": zigzag,
    "canny_edges": canny_edges,
}
assert tuple(_FUNCTIONS) == CORRUPTIONS
