"""Real images to MNIST's look: polarity, transparency, cropping, aspect, centring, blank images, bad files."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from digitlab.images.mnist_look import (
    ImageError,
    centre_of_mass,
    prepare,
    prepared_as_model_input,
    read_image,
    to_mnist,
)


def bar(width: int, height: int, size=(200, 300), at=(40, 60), ink=255, paper=0) -> np.ndarray:
    """A solid rectangle of ink (width x height) on plain paper, its top-left corner at `at` (x, y)."""
    picture = np.full(size[::-1], paper, dtype=np.uint8)
    picture[at[1] : at[1] + height, at[0] : at[0] + width] = ink
    return picture


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_digit_is_centred_by_its_centre_of_mass_not_its_box():
    wedge = np.zeros((300, 200), np.uint8)
    wedge[20:110, 120:180] = np.tril(np.full((90, 60), 255, np.uint8), k=-30)  # most of its ink low and left
    digit = prepare(wedge)
    row, column = centre_of_mass(digit.astype(float))
    assert abs(row - 14) <= 0.5 and abs(column - 14) <= 0.5


def test_the_centre_of_mass_is_the_brightness_weighted_mean_position():
    image = np.zeros((6, 10), np.float32)
    image[0, 0], image[4, 8] = 1, 3  # a quarter of the weight at (0, 0), three quarters at (4, 8)
    assert centre_of_mass(image) == (3.0, 6.0)


def test_the_longer_side_fills_20_pixels_and_the_aspect_ratio_is_kept():
    digit = prepare(bar(30, 90))  # 1:3
    rows, columns = np.flatnonzero(digit.max(axis=1) > 127), np.flatnonzero(digit.max(axis=0) > 127)
    height, width = rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1
    assert height == 20 and width in (6, 7, 8)


@pytest.mark.parametrize("ink, paper", [(255, 0), (0, 255), (20, 200)], ids=["light-on-dark", "dark-on-light", "grey"])
def test_either_polarity_gives_white_ink_on_black(ink, paper):
    digit = prepare(bar(30, 90, ink=ink, paper=paper))
    assert digit[14, 14] > 200 and digit[0, 0] == 0 and digit[14, 2] == 0


def test_a_transparent_canvas_takes_its_ink_from_the_alpha_channel():
    strokes = bar(30, 90)
    drawing = np.zeros((*strokes.shape, 4), dtype=np.uint8)  # black strokes, transparent elsewhere
    drawing[..., 3] = strokes
    assert np.array_equal(prepare(Image.fromarray(drawing, "RGBA")), prepare(strokes))


def test_an_opaque_rgba_image_is_read_by_its_colours():
    strokes = np.stack([bar(30, 90, ink=0, paper=255)] * 3 + [np.full((300, 200), 255, np.uint8)], axis=-1)
    assert np.array_equal(prepare(Image.fromarray(strokes, "RGBA")), prepare(bar(30, 90)))


def test_jpeg_noise_on_the_paper_is_not_taken_for_ink():
    rng = np.random.default_rng(0)
    noisy = np.clip(bar(30, 90, ink=30, paper=220) + rng.normal(0, 12, (300, 200)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=70)
    digit = prepare(buffer.getvalue())
    assert np.count_nonzero(digit) == np.count_nonzero(prepare(bar(30, 90)))


def test_a_thin_faint_digit_on_noisy_paper_fills_the_box_and_the_specks_do_not_count():
    # A thin stroke, hardly more of the pixels than the 0.5% above the 99.5th percentile that sets the ink's
    # level: the threshold between paper and ink is 3.5 standard deviations of the paper's noise, and a few
    # dozen specks of paper, one here and one there, pass it too.
    rng = np.random.default_rng(0)
    paper = rng.normal(220, 10, (400, 400))
    paper[100:300, 200:205] = 120  # faint, five pixels wide: 0.63% of the pixels
    digit = prepare(np.clip(paper, 0, 255).astype(np.uint8))
    rows = np.flatnonzero(digit.max(axis=1) > 60)
    assert rows[-1] - rows[0] + 1 >= 19  # the stroke fills the 20-pixel box, as a clean one does


def test_a_fine_pen_is_widened_to_mnists_and_an_ordinary_one_left_as_it_is():
    fine = prepare(bar(6, 400, size=(300, 500)))  # a 1 drawn with a pen 1.5% of its height wide
    ordinary = prepare(bar(40, 400, size=(300, 500)))  # 10%, MNIST's own share
    assert fine[14].sum() / 255 >= 2.0  # MNIST's strokes are 2-3 pixels wide: 0.3 pixels unwidened
    assert np.array_equal(ordinary, prepare(bar(40, 400, size=(300, 500))))
    assert abs(fine[14].sum() - ordinary[14].sum()) / 255 < 1.0  # both about MNIST's width


def test_a_16_bit_image_is_scaled_by_its_own_range():
    strokes = bar(30, 90).astype(np.uint16) * 16  # a 12-bit scan: ink at 4,080 of 65,535
    assert np.array_equal(prepare(Image.fromarray(strokes)), prepare(bar(30, 90)))


@pytest.mark.parametrize("value", [0, 255, 128])
def test_a_blank_image_holds_no_digit(value):
    assert prepare(np.full((100, 100), value, dtype=np.uint8)) is None


def test_faint_noise_alone_holds_no_digit():
    noise = np.random.default_rng(0).normal(200, 3, (100, 100))
    assert to_mnist(read_image(np.clip(noise, 0, 255).astype(np.uint8))) is None


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "the file is empty"),
        (b"not an image at all", "not an image"),
        (b"%PDF-1.4\n%...", "not an image"),
        (png(bar(30, 90))[:60], "not an image"),
        (png(np.zeros((1, 1), np.uint8)), "1x1 pixels, too small"),
    ],
    ids=["empty", "text", "pdf", "truncated-png", "1x1"],
)
def test_bad_data_is_a_one_line_image_error(data, message):
    with pytest.raises(ImageError, match=message) as error:
        prepare(data)
    assert "\n" not in str(error.value)


def test_a_decompression_bomb_is_refused_without_decoding_it():
    # A PNG header that claims 20,000 x 20,000 pixels: Pillow's guard must refuse it before decoding.
    header = png(np.zeros((8, 8), np.uint8))
    bomb = bytearray(header)
    bomb[16:24] = (20000).to_bytes(4, "big") * 2  # IHDR width and height
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")  # the chunk's checksum, to match
    with pytest.raises(ImageError, match="too large"):
        prepare(bytes(bomb))


def test_the_first_frame_of_an_animation_is_read():
    frames = [Image.fromarray(bar(30, 90)), Image.fromarray(bar(120, 30))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert np.array_equal(prepare(buffer.getvalue()), prepare(bar(30, 90)))


def test_missing_file_and_folder_are_named_as_such(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        prepare(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="a folder"):
        prepare(tmp_path)


def test_a_huge_image_is_reduced_before_processing():
    huge = Image.new("L", (6000, 3000), 255)
    huge.paste(0, (1000, 500, 1400, 2200))
    assert read_image(huge).shape == (1024, 2048)


def test_exif_orientation_is_applied_before_anything_else():
    # A phone's portrait photo: stored sideways (rotated a quarter turn anticlockwise), with EXIF
    # orientation 6, "turn a quarter clockwise to show". Shown, its bar of ink runs along the top.
    shown = bar(160, 30, size=(200, 300), at=(20, 10), ink=0, paper=255)
    stored = Image.fromarray(shown).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif, quality=95)

    ink = read_image(buffer.getvalue())
    assert ink.shape == shown.shape  # 300 rows of 200, as shown, not 200 of 300 as stored
    rows = np.flatnonzero(ink.mean(axis=1) > 127)
    assert rows.min() >= 5 and rows.max() <= 45  # the bar is at the top, where the viewer sees it


def test_images_prepared_as_model_input_leave_out_the_blank_ones_and_say_which():
    stroke = np.zeros((120, 120), np.uint8)
    stroke[20:100, 55:65] = 255  # a 1
    images = (Image.fromarray(array) for array in (stroke, np.zeros((120, 120), np.uint8), 255 - stroke))
    model_input, found = prepared_as_model_input(images)
    assert found.tolist() == [True, False, True]
    assert model_input.shape == (2, 28, 28, 1) and model_input.dtype == np.float32
    np.testing.assert_array_equal(model_input[0], model_input[1])  # light on black, dark on paper: one digit
    assert model_input.max() == 1.0
