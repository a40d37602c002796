"""Real images of digits, turned into what the model was trained on.

MNIST digits were made a particular way (LeCun's MNIST page): white ink on black, the
digit scaled to fit a 20x20 box keeping its aspect ratio, with grey anti-aliased edges,
then centred in 28x28 by its centre of mass. A photo or a drawing is nothing like that,
so `prepare` makes it so:

  read_image  any size and format Pillow reads (first frame of an animation), RGB, grey,
              16-bit or with transparency (a transparent canvas: the ink is in the alpha
              channel) -> 8-bit greyscale ink map, ink bright on dark, whichever way round it was
  to_mnist    find the ink at full resolution, crop to it, scale it into 20x20 keeping its
              aspect ratio (a pen much finer than MNIST's made as broad first), centre it in 28x28
              by its centre of mass; None if there is no ink

and `to_model_input` turns 28x28 images, MNIST's own or these, into what the model takes.
Preprocess (the MNIST files and the non-digits) and the reader (your images) share this module.
"""

import io
import math
import warnings
from pathlib import Path

from digitlab.shared.errors import UserError
from digitlab.shared.mnist import IMAGE_SIZE

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

DIGIT_BOX = 20  # MNIST's digits fit a 20x20 box inside the 28x28 image
MAX_SIDE = 2048  # larger images are reduced to this first: plenty for one digit, and bounded memory
MIN_SIDE = 8  # smaller than this cannot hold a recognisable digit
INK = 0.35  # after normalising, brighter than this is ink (below: paper, noise, JPEG ringing)
NO_DIGIT = "no digit found"
MIN_CONTRAST = 0.15  # ink this close to the paper's level (a fraction of black to white) is no digit
# The pen's width, in pixels of a digit scaled into a PEN_BOX box (`pen_width`): MNIST's median, and below its
# 5th percentile (docs/benchmark-history.md, "Pen widths"). A pen finer than THIN_PEN is made MNIST_PEN.
PEN_BOX = 80
THIN_PEN = 6.0
MNIST_PEN = 8.5


def to_model_input(images: np.ndarray) -> np.ndarray:
    """Scale uint8 images to float32 in [0, 1] and add the channel axis: (N, 28, 28, 1)."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


class ImageError(UserError):
    """An image that cannot be read or holds no digit; the message says which and why."""


def read_image(source) -> np.ndarray:
    """Greyscale ink map, uint8, ink bright: from a path, bytes, a PIL image or an array."""
    # A phone stores a portrait photo sideways, with an EXIF tag that says how to turn it: turn it first.
    image = ImageOps.exif_transpose(_open(source))
    if min(image.size) < MIN_SIDE:
        raise ImageError(f"the image is {image.width}x{image.height} pixels, too small to hold a digit")
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BOX)
    if "A" in image.getbands() or "transparency" in image.info:
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if alpha.min() < 250:  # a transparent canvas: the strokes are where it is opaque
            return alpha
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float greys: scale by their own range
        grey = np.asarray(image, dtype=np.float32)
        grey = (grey * (255 / grey.max())).astype(np.uint8) if grey.max() > 0 else grey.astype(np.uint8)
    else:
        grey = np.asarray(image if image.mode == "L" else image.convert("RGB").convert("L"))
    # Paper covers most of a picture of a digit: if it is light, the ink is dark, so invert.
    return 255 - grey if _levels(grey, 0.5)[0] > 127 else grey


def _levels(pixels: np.ndarray, *fractions: float) -> list[int]:
    """The grey levels below which these fractions of the pixels lie: percentiles, from a histogram (fast)."""
    step = math.ceil(math.sqrt(pixels.size / 40_000))  # a regular sample of about 40,000 pixels is plenty
    cumulative = np.bincount(pixels[::step, ::step].ravel(), minlength=256).cumsum()
    return [int(np.searchsorted(cumulative, fraction * cumulative[-1])) for fraction in fractions]


def _open(source) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        array = np.asarray(source, dtype=np.float32)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3):
            raise ImageError(f"an array of shape {array.shape} is not an image")
        scale = 255 if array.max() <= 1 else 1  # floats in [0, 1] or values in [0, 255]
        return Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8))
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("a folder, not an image") from None
    except OSError as error:
        raise ImageError(f"cannot read it ({error.strerror})") from None
    if not data:
        raise ImageError("the file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 million pixels and refuses from twice that: refuse both, before decoding.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced size where that is enough
        image.seek(0)  # the first frame of an animation
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"the image is too large to read safely ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"not an image Pillow can read ({type(error).__name__})") from None
    return image


def to_mnist(ink: np.ndarray) -> np.ndarray | None:
    """A 28x28 uint8 image in MNIST's style (white digit on black) from an ink map; None if no digit is found."""
    paper, strongest = _levels(ink, 0.5, 0.995)
    if strongest - paper < MIN_CONTRAST * 255:
        return None
    strokes = ink >= paper + INK * (strongest - paper)
    crop = ink_box(strokes)  # at full resolution
    if crop is None:
        return None
    digit = np.clip((ink[crop].astype(np.float32) - paper) / (strongest - paper), 0, 1) * strokes[crop]

    small = np.asarray(to_box(Image.fromarray((digit * 255).astype(np.uint8))), dtype=np.float32)

    # Place the digit so that its centre of mass lands on the centre of the 28x28 image.
    centre_row, centre_column = centre_of_mass(small)
    top = int(np.clip(round(IMAGE_SIZE / 2 - centre_row), 0, IMAGE_SIZE - small.shape[0]))
    left = int(np.clip(round(IMAGE_SIZE / 2 - centre_column), 0, IMAGE_SIZE - small.shape[1]))
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.clip(canvas, 0, 255).astype(np.uint8)


def to_box(digit: Image.Image) -> Image.Image:
    """The cropped digit scaled into MNIST's 20x20 box, keeping its aspect ratio; a pen much finer than MNIST's
    made as broad as MNIST's median first. A thin pen is what a user's digit differs by most from MNIST's
    (a fine pen, a photo of pencil, a large drawing): the model refused such digits far more often than
    others (the figures: benchmarks/README.md, "Drawn non-digits and users' digits")."""

    def scaled(image: Image.Image, box: int) -> Image.Image:
        factor = box / max(image.size)
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        return image.resize(size, Image.Resampling.LANCZOS)

    large = scaled(digit, PEN_BOX)
    pen = pen_width(np.asarray(large) >= INK * 255)
    if pen >= THIN_PEN:
        return scaled(digit, DIGIT_BOX)
    grow = round((MNIST_PEN - pen) / 2)  # pixels on each side of the stroke, at PEN_BOX
    bordered = ImageOps.expand(large, border=grow, fill=0)  # room to grow: the crop ends at the ink
    return scaled(bordered.filter(ImageFilter.MaxFilter(2 * grow + 1)), DIGIT_BOX)


def pen_width(strokes: np.ndarray) -> float:
    """The strokes' mean width in pixels: twice their area over their outline (a stroke of length L and width w
    has area L w and an outline of about 2 L), the outline counted as the ink's edges to the four neighbours."""
    strokes = np.pad(strokes, 1)  # the crop ends at the ink: its edge is an edge of the strokes too
    edges = np.count_nonzero(strokes[1:] != strokes[:-1]) + np.count_nonzero(strokes[:, 1:] != strokes[:, :-1])
    return 2 * np.count_nonzero(strokes) / max(edges, 1)


def ink_box(strokes: np.ndarray) -> tuple[slice, slice] | None:
    """The rows and columns that hold the strokes, leaving out specks of one pixel: noisy paper lets some
    through when the ink is thin and faint, and one speck in a corner would shrink the digit to a dot. A
    pixel counts where a 2x2 square of ink holds it; strokes thinner than that count as they are."""
    solid = strokes[:-1, :-1] & strokes[1:, :-1] & strokes[:-1, 1:] & strokes[1:, 1:]
    kept = np.zeros_like(strokes)
    for down in (0, 1):
        for right in (0, 1):
            kept[down : down + solid.shape[0], right : right + solid.shape[1]] |= solid
    mask = kept if kept.any() else strokes
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1)


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the brightness-weighted centre of a 2-D image, as scipy.ndimage.center_of_mass
    computes it. Not imported from SciPy: importing scipy.ndimage takes 0.6 s, more than the rest of
    mnist-predict's start-up (benchmarks/README.md, "Using the model without TensorFlow")."""
    total = image.sum()
    rows, columns = np.ogrid[: image.shape[0], : image.shape[1]]
    return float((image * rows.astype(float)).sum() / total), float((image * columns.astype(float)).sum() / total)


def prepare(source) -> np.ndarray | None:
    """`read_image` then `to_mnist`: a 28x28 uint8 digit, or None if the image holds none."""
    return to_mnist(read_image(source))


def prepared_as_model_input(images) -> tuple[np.ndarray, np.ndarray]:
    """Each of `images` (any iterable: a generator keeps only one large image at a time) `prepare`d as the
    reader prepares a user's image, as model input ((N, 28, 28, 1) float32, N the images that held a
    digit), and which of them did (a bool per image): the reader answers "no digit found" for the others
    before the model sees them, so they are left out."""
    digits = [prepare(image) for image in images]
    found = np.array([digit is not None for digit in digits], dtype=bool)
    kept = [digit for digit in digits if digit is not None]
    stacked = np.stack(kept) if kept else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return to_model_input(stacked), found


def prepare_or_why(source) -> tuple[np.ndarray | None, str | None]:
    """`prepare`, answering (digit, None) or (None, the reason): for worker processes, where one bad
    image must not stop the others."""
    try:
        digit = prepare(source)
    except ImageError as error:
        return None, str(error)
    return (digit, None) if digit is not None else (None, NO_DIGIT)
