"""Letters, doodles and words drawn as strokes in many hands: what each hand does, the same from the same
seed, every letter a word needs, and no letter drawn alone that reads as a digit."""

from dataclasses import replace

import numpy as np
import pytest

from digitlab.images.strokes import DOODLES, GLYPHS, HANDS, LETTERS, WORDS, drawn, written


def draw(shape, hand: str, seed: int, side: int = 200) -> np.ndarray:
    return drawn(shape, hand, np.random.default_rng(seed), side)


def test_every_letter_of_every_word_and_of_the_letters_alone_has_strokes():
    assert set("".join(WORDS)) <= set(GLYPHS) and set(LETTERS) <= set(GLYPHS)


def test_no_letter_written_like_a_digit_is_drawn_alone():
    assert not set(LETTERS) & set("OoDQIil1|SsZzBbGgq")  # 0, 1, 5, 2, 8, 6 and 9 in many hands


@pytest.mark.parametrize("hand", sorted(HANDS))
def test_each_hand_draws_the_same_from_the_same_seed_and_fills_45_to_90_percent_of_the_side(hand):
    shape = written("H")
    first, again, other = draw(shape, hand, 1), draw(shape, hand, 1), draw(shape, hand, 2)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    for seed in range(5):
        ink = draw(shape, hand, seed) > 0.1
        rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        extent = max(rows[-1] - rows[0], columns[-1] - columns[0]) / 200
        assert 0.4 <= extent <= 1.0, (hand, seed, extent)  # the pen's width adds a little to 45-90%


def test_the_hands_differ_as_they_say():
    def mean_ink(hand: str) -> float:
        return float(np.mean([draw(written("H"), hand, seed).mean() for seed in range(8)]))

    assert mean_ink("marker") > 2 * mean_ink("ballpoint")  # a broad pen against a fine one
    assert max(draw(written("H"), "pencil", seed).max() for seed in range(8)) < 0.9  # pencil is grey
    # A dry pen leaves gaps: the same stroke, drawn with and without them, holds less ink with them.
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(HANDS, "dry pen", replace(HANDS["dry pen"], gaps=0.0))
        solid = draw(written("H"), "dry pen", 3)
    assert draw(written("H"), "dry pen", 3).sum() < 0.97 * solid.sum()


def test_a_shaky_hand_strays_from_a_straight_stroke_and_a_steady_one_hardly():
    def wander(hand: str) -> float:
        """How far, in pixels, the ink's centre on each row strays from the best straight line through it."""
        strays = []
        for seed in range(6):
            ink = drawn([[(0.5, 0.0), (0.5, 1.0)]], hand, np.random.default_rng(seed), 200)
            rows = np.flatnonzero(ink.sum(axis=1) > 0)
            centres = np.array([np.average(np.arange(200), weights=ink[row]) for row in rows])
            strays.append(np.std(centres - np.polyval(np.polyfit(rows, centres, 1), rows)))  # slant and turn removed
        return float(np.mean(strays))

    assert wander("shaky") > 2 * wander("ballpoint")


def test_every_doodle_and_word_is_drawn_with_ink_inside_the_image():
    rng = np.random.default_rng(0)
    for shape in [make() for make in DOODLES.values()] + [written(word) for word in WORDS]:
        ink = drawn(shape, "marker", rng, 120)
        assert ink.shape == (120, 120) and 0.01 < ink.mean() < 0.6
