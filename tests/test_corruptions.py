"""The MNIST-C corruptions: format, determinism, and each one's setting from the paper's code
(google-research/mnist-c, corruptions.py), checked on synthesised digits so that no MNIST file is needed."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage import color

from digitlab.evaluation.corruptions import CORRUPTIONS, corrupt
from tests.conftest import PROJECT_ROOT

SIZE = 28
CENTRE = 13.5
# Those whose output does not depend on the seed.
DETERMINISTIC = {"scale", "brightness", "stripe", "canny_edges"}


def levels(images: np.ndarray) -> np.ndarray:
    """As the pipeline stores images: uint8 levels / 255, float32, (N, 28, 28, 1)."""
    return (np.round(np.clip(images, 0, 1) * 255) / 255).astype(np.float32)[..., None]


def synthesised_digits(count: int = 20) -> np.ndarray:
    """Digit-like images: 2 or 3 random strokes and loops, drawn at 4 times the size and shrunk so
    that their edges are grey as in MNIST, inside the central 20 x 20 as MNIST's digits are."""
    rng = np.random.default_rng(1234)
    images = []
    for _ in range(count):
        canvas = Image.new("L", (4 * SIZE, 4 * SIZE))
        draw = ImageDraw.Draw(canvas)
        for _ in range(rng.integers(2, 4)):
            if rng.random() < 0.4:
                left, top = rng.integers(4 * 5, 4 * 12, size=2)
                draw.ellipse(
                    [left, top, left + rng.integers(20, 36), top + rng.integers(24, 40)], outline=255, width=10
                )
            else:
                points = [tuple(int(v) for v in rng.integers(4 * 5, 4 * 23, size=2)) for _ in range(3)]
                draw.line(points, fill=255, width=10, joint="curve")
        small = np.asarray(canvas.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.float64) / 255
        images.append(small / small.max())
    return levels(np.stack(images))


def blank(count: int = 20, value: float = 0.0) -> np.ndarray:
    return levels(np.full((count, SIZE, SIZE), value))


def shapes(where, count: int = 20) -> np.ndarray:
    """`count` copies of one binary shape: the pixels `where` (an index such as np.s_[13:15, 4:24]) white."""
    image = np.zeros((SIZE, SIZE))
    image[where] = 1
    return levels(np.repeat(image[None], count, axis=0))


def centroids(images: np.ndarray) -> np.ndarray:
    """(column, row) of each image's centre of mass."""
    weights = images[..., 0].astype(np.float64)
    rows, columns = np.mgrid[0:SIZE, 0:SIZE]
    mass = weights.sum(axis=(1, 2))
    sums = [(weights * columns).sum(axis=(1, 2)), (weights * rows).sum(axis=(1, 2))]
    return np.stack(sums, axis=1) / mass[:, None]


def moments(image: np.ndarray) -> tuple[float, float, float]:
    """Weighted variance of the column, of the row, and their covariance."""
    weights = image[..., 0].astype(np.float64)
    rows, columns = np.mgrid[0:SIZE, 0:SIZE]
    mass = weights.sum()
    across = columns - (weights * columns).sum() / mass
    down = rows - (weights * rows).sum() / mass
    return tuple(float((weights * product).sum() / mass) for product in (across**2, down**2, across * down))


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return synthesised_digits()


# ---------------------------------------------------------------- every corruption


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_changes_every_image_and_keeps_the_format(digits, name):
    corrupted = corrupt(digits, name, seed=0)
    assert corrupted.shape == digits.shape and corrupted.dtype == np.float32
    assert corrupted.min() >= 0 and corrupted.max() <= 1
    np.testing.assert_array_equal(corrupted * 255, np.round(corrupted * 255))  # the 256 levels stored
    # None of the 15 leaves a digit as it was at this seed. Spatter could in principle (no blot reaching
    # the 0.8 threshold) and motion blur on a digit of horizontal strokes only, but these do not.
    changed = np.abs(corrupted - digits).reshape(len(digits), -1).max(axis=1) > 0
    assert changed.all(), f"{name} left images {np.flatnonzero(~changed)} unchanged"
    np.testing.assert_array_equal(digits, synthesised_digits())  # and the input is left alone


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_same_seed_same_bytes_other_seed_other_corruption(digits, name):
    first = corrupt(digits, name, seed=7)
    assert corrupt(digits, name, seed=7).tobytes() == first.tobytes()
    if name in DETERMINISTIC:
        assert corrupt(digits, name, seed=8).tobytes() == first.tobytes()
    else:
        assert corrupt(digits, name, seed=8).tobytes() != first.tobytes()


def test_same_seed_same_bytes_in_another_process(digits, tmp_path):
    np.save(tmp_path / "digits.npy", digits)
    script = (
        "import sys, numpy as np\n"
        "from digitlab.evaluation.corruptions import CORRUPTIONS, corrupt\n"
        "digits = np.load(sys.argv[1])\n"
        "np.savez(sys.argv[2], **{name: corrupt(digits, name, 3) for name in CORRUPTIONS})\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "digits.npy"), str(tmp_path / "out.npz")],
        cwd=PROJECT_ROOT,
        check=True,
        timeout=120,
    )
    with np.load(tmp_path / "out.npz") as there:
        for name in CORRUPTIONS:
            assert there[name].tobytes() == corrupt(digits, name, 3).tobytes(), name


def test_unknown_corruption_is_named_in_the_error(digits):
    with pytest.raises(ValueError, match="'gaussian_noise'"):
        corrupt(digits, "gaussian_noise", seed=0)


def test_images_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"\(N, 28, 28, 1\)"):
        corrupt(np.zeros((2, 28, 28), np.float32), "stripe", seed=0)


# ---------------------------------------------------------------- each one's setting


def test_shot_noise_counts_3_photons_per_unit_of_brightness(digits):
    # Poisson(3 x) / 3, clipped: every pixel is 0, 1/3, 2/3 or 1 (5 or 12 photons would give others).
    corrupted = corrupt(digits, "shot_noise", seed=0)
    assert set(np.unique(np.round(corrupted * 255)).astype(int)) <= {0, 85, 170, 255}


def test_impulse_noise_flips_17_percent_of_pixels_half_white_half_black():
    grey = blank(value=128 / 255)
    corrupted = corrupt(grey, "impulse_noise", seed=0)
    white, black = (corrupted == 1).mean(), (corrupted == 0).mean()
    assert np.isin(corrupted[(corrupted != 0) & (corrupted != 1)], grey).all()
    assert white + black == pytest.approx(0.17, abs=0.015)
    assert white == pytest.approx(black, abs=0.015)


def test_glass_blur_blurs_by_0_7_down_the_image_only_and_swaps_with_neighbours_up_or_left():
    # The original's blur, gaussian(multichannel=True) on a 2-D image, runs down the columns only: twice
    # sigma 0.7, so a dot's variance grows by 2 x 0.49 more down than across (the swaps add to both).
    dots = shapes(np.s_[14, 14])
    spread = np.array([moments(image) for image in corrupt(dots, "glass_blur", seed=0)])
    assert (spread[:, 1] - spread[:, 0]).mean() == pytest.approx(2 * 0.7**2, abs=0.3)
    # Its swaps are with (row + dy, column + dx), dx and dy -1 or 0, from column 2 on: column 0 is never
    # reached, by them or by the blur, even beside a bar.
    bars = shapes(np.s_[:, 1:4])
    corrupted = corrupt(bars, "glass_blur", seed=0)
    assert corrupted[:, :, 0].max() == 0 and (corrupted[:, :, 1:4] < 1).any()


def test_motion_blur_is_imagemagicks_one_sided_gaussian_of_sigma_3_within_45_degrees():
    # Each pixel is the mean of the 21 pixels from it along the angle, weighted exp(-i^2 / 18), i = 0 to
    # 20: a dot becomes a streak behind it whose centre of mass is sum(i w_i) / sum(w_i) pixels away.
    taps = np.arange(21)
    weights = np.exp(-(taps**2) / (2 * 3**2))
    dots = shapes(np.s_[14, 14])
    moved = centroids(corrupt(dots, "motion_blur", seed=0)) - centroids(dots)
    distance = np.hypot(moved[:, 0], moved[:, 1])
    np.testing.assert_allclose(distance, (taps * weights).sum() / weights.sum(), atol=0.2)
    angle = np.degrees(np.arctan2(-moved[:, 1], -moved[:, 0]))
    assert (np.abs(angle) <= 45 + 3).all() and angle.min() < -10 and angle.max() > 10


def test_shear_slants_a_vertical_bar_by_sin_0_4_either_way():
    # The inverse map [[1, -sin s], [0, cos s]] (scikit-image's AffineTransform(shear=s) of 2019) turns
    # a vertical bar into one of slope (columns per row) sin s, s = 0.4 or -0.4.
    bars = shapes(np.s_[6:22, 13:15])
    slopes = []
    for image in corrupt(bars, "shear", seed=0):
        across, down, both = moments(image)
        slopes.append(both / down)
    np.testing.assert_allclose(np.abs(slopes), np.sin(0.4), atol=0.03)
    assert min(slopes) < 0 < max(slopes)


def test_rotate_turns_a_bar_by_0_4_radians_either_way():
    bars = shapes(np.s_[13:15, 4:24])
    angles = []
    for image in corrupt(bars, "rotate", seed=0):
        across, down, both = moments(image)
        angles.append(0.5 * np.arctan2(2 * both, across - down))
    np.testing.assert_allclose(np.abs(angles), 0.4, atol=0.03)
    assert min(angles) < 0 < max(angles)


def test_scale_shrinks_about_the_centre_to_0_7():
    bars = shapes(np.s_[13:15, 4:24])
    scaled = corrupt(bars, "scale", seed=0)
    np.testing.assert_allclose(centroids(scaled), CENTRE, atol=1e-6)
    ratio = np.sqrt(moments(scaled[0])[0] / moments(bars[0])[0])
    assert ratio == pytest.approx(0.7, abs=0.03)


def test_translate_moves_every_digit_3_pixels_along_each_axis_either_way(digits):
    moved = centroids(corrupt(digits, "translate", seed=0)) - centroids(digits)
    np.testing.assert_allclose(np.abs(moved), 3, atol=1e-4)
    assert (moved.min(axis=0) < 0).all() and (moved.max(axis=0) > 0).all()


def test_brightness_adds_0_5_as_the_originals_hsv_round_trip_does(digits):
    brightened = corrupt(digits, "brightness", seed=0)
    np.testing.assert_allclose(brightened, np.minimum(digits + 0.5, 1), atol=0.5 / 255 + 1e-6)
    # The original: value + 0.5 in HSV, on the grey image made RGB, then back to grey.
    for image, ours in zip(digits[..., 0].astype(np.float64), brightened[..., 0], strict=True):
        hsv = color.rgb2hsv(color.gray2rgb(image))
        hsv[..., 2] = np.clip(hsv[..., 2] + 0.5, 0, 1)
        original = np.clip(color.rgb2gray(color.hsv2rgb(hsv)), 0, 1)
        np.testing.assert_array_equal(ours, (np.round(original * 255) / 255).astype(np.float32))


def test_stripe_inverts_the_7_columns_at_each_side(digits):
    striped = corrupt(digits, "stripe", seed=0)
    np.testing.assert_array_equal(striped[:, :, 7:21], digits[:, :, 7:21])
    np.testing.assert_allclose(striped[:, :, :7], 1 - digits[:, :, :7], atol=1e-6)
    np.testing.assert_allclose(striped[:, :, 21:], 1 - digits[:, :, 21:], atol=1e-6)


def test_fog_adds_3_times_a_fractal_and_rescales_by_max_over_max_plus_3(digits):
    # The fractal depends on the seed and the image's place in the batch only, so a white image, with the
    # same seed, shows the fractal p each digit gets: white becomes (1 + 3p) / 4, and a digit of
    # brightest pixel m, (x + 3p) m / (m + 3). Dimmed digits (m = 0.5), so that m / (m + 3) is not 1/4.
    white = corrupt(blank(value=1.0), "fog", seed=0)[..., 0].astype(np.float64)
    fractal = (4 * white - 1) / 3
    assert fractal.min() >= -1e-6 and fractal.max() <= 1 + 1e-6
    dim = levels(digits[..., 0] * 0.5)
    brightest = dim.max(axis=(1, 2, 3))[:, None, None]
    expected = (dim[..., 0] + 3 * fractal) * brightest / (brightest + 3)
    np.testing.assert_allclose(corrupt(dim, "fog", seed=0)[..., 0], expected, atol=2 / 255)


def test_spatter_lays_mud_of_grey_63_where_the_blurred_blots_reach_0_8():
    # On black, a pixel under mud is 63/255 times m, with m from 0.8 to 1: levels 50 to 63, or none.
    muddy = np.round(corrupt(blank(), "spatter", seed=0) * 255)
    assert ((muddy == 0) | ((muddy >= 50) & (muddy <= 63))).all()
    assert (muddy == 63).any() and (muddy.reshape(len(muddy), -1) > 0).any(axis=1).mean() > 0.5


def test_dotted_line_is_dashes_two_columns_long_and_never_in_the_last_column():
    lines = corrupt(blank(), "dotted_line", seed=0)[..., 0]
    gaps = [column for start in range(0, 26, 4) for column in (start, start + 1)] + [27]
    dashes = [column for column in range(SIZE) if column not in gaps]
    assert lines[:, :, gaps].max() == 0
    assert (lines[:, :, dashes].max(axis=1) >= 0.75).all()  # the line runs through every dash


def test_zigzag_runs_from_column_2_to_column_25():
    # It starts at column 2 on its random row (0 to 26), so always in the image, and ends at column 25
    # (drawn up to 24, or 25 if it ends lower than it starts) 5 rows above to 4 below, which can be
    # outside the image.
    zigzags = corrupt(blank(), "zigzag", seed=0)[..., 0]
    assert zigzags[:, :, :2].max() == 0 and zigzags[:, :, 26:].max() == 0
    assert (zigzags[:, :, 2].max(axis=1) >= 0.75).all()
    assert (zigzags[:, :, 24].max(axis=1) > 0).mean() > 0.5


def test_canny_edges_is_a_binary_outline_at_sigma_1():
    # Two strokes 2 pixels wide and 2 apart: scikit-image's canny at sigma 1 outlines both sides of each,
    # where a sigma of 2 or more would have merged them into one outline.
    pair = shapes(np.s_[4:24, [10, 11, 14, 15]], count=1)
    edges = corrupt(pair, "canny_edges", seed=0)[0, ..., 0]
    assert set(np.unique(edges)) == {0.0, 1.0}
    along = edges[8:20]  # away from the ends of the strokes
    assert set(np.nonzero(along)[1]) == {9, 12, 13, 16} and (along.sum(axis=1) == 4).all()
