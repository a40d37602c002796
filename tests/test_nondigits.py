"""The set of images that hold no digit: the same from the same seed, in any process; its splits apart,
images and hands; every kind in every look; and still made where Pillow has no scalable font."""

import hashlib
import subprocess
import sys

import numpy as np
from PIL import ImageFont

from digitlab.images import nondigits
from digitlab.images.mnist_look import prepare
from digitlab.images.nondigits import HAND_DRAWN, KINDS, LOOKS, nondigit_images, split_seeds
from digitlab.images.strokes import HANDS, HANDS_OF

from .conftest import PROJECT_ROOT


def fingerprint(count: int, seed: int, split: str) -> str:
    digest = hashlib.sha256()
    for image, kind, look, hand in nondigit_images(count, seed, split):
        digest.update(f"{kind}|{look}|{hand}|{image.mode}|{image.size}".encode() + image.tobytes())
    return digest.hexdigest()


def test_the_same_seed_gives_the_same_images_in_another_process():
    code = "from tests.test_nondigits import fingerprint; print(fingerprint(60, 7, 'test'))"
    other = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == fingerprint(60, 7, "test")
    assert fingerprint(60, 7, "test") != fingerprint(60, 8, "test")


def test_the_splits_are_made_from_different_seeds_and_share_no_image():
    every_seed = [seed for base in range(5) for seed in split_seeds(base).values()]
    assert len(set(every_seed)) == len(every_seed)  # no split of one seed is a split of another
    images = {split: {image.tobytes() for image, *_ in nondigit_images(60, 0, split)} for split in HANDS_OF}
    assert not images["train"] & images["val"] and not images["val"] & images["test"]
    assert not images["train"] & images["test"]


def test_no_hand_draws_for_two_splits_and_each_split_uses_all_of_its_own():
    assert sorted(hand for hands in HANDS_OF.values() for hand in hands) == sorted(HANDS)  # each hand in one split
    for split, hands in HANDS_OF.items():
        made = nondigit_images(len(KINDS) * 40, 0, split)
        used = {hand for _, kind, _, hand in made if kind in HAND_DRAWN}
        assert used == set(hands), (split, used)  # every drawn image is in one of the split's own hands...
        assert {hand for _, kind, _, hand in made if kind not in HAND_DRAWN} == {None}  # ...and only those are drawn


def test_every_kind_comes_in_every_look_and_nearly_all_hold_ink_the_reader_finds():
    made = nondigit_images(len(KINDS) * len(LOOKS) * 2, 3, "train")
    assert {(kind, look) for _, kind, look, _ in made} == {(kind, look) for kind in KINDS for look in LOOKS}
    assert {image.mode for image, _, look, _ in made if look == "transparent"} == {"RGBA"}
    prepared = [prepare(image) for image, *_ in made]
    # Only a rare faint texture or smooth noise is too flat to hold "ink"; the rest reach the model.
    assert sum(digit is None for digit in prepared) <= 2
    assert all(digit.shape == (28, 28) and digit.any() for digit in prepared if digit is not None)


def test_without_a_scalable_font_the_letters_are_drawn_with_pillows_bitmap_font(monkeypatch):
    real = ImageFont.load_default

    def no_freetype(size=None):
        if size is not None:
            raise ImportError("The _imagingft C module is not installed")
        return real()

    monkeypatch.setattr(nondigits.ImageFont, "load_default", no_freetype)
    letters = [image for image, kind, _, _ in nondigit_images(len(KINDS) * len(LOOKS), 5, "train") if kind == "letters"]
    assert len(letters) == len(LOOKS)
    # Something was drawn, large enough to fill the image as a scalable font's letters do.
    for image in letters:
        ink = np.asarray(image.getchannel("A") if image.mode == "RGBA" else image.convert("L"), dtype=float)
        ink = ink if ink.mean() < 128 else 255 - ink  # paper: the ink is dark
        rows = np.flatnonzero((ink > 128).any(axis=1))
        assert len(rows) and rows[-1] - rows[0] > image.height / 4, image
