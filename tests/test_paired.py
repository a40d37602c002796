"""The paired test on answers (digitlab/review/paired.py): counts, directions, p-values, the noise floor, the
interval, and how p-values and levels are shown. tests/test_verdict_promise.py checks its promises by simulation."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from digitlab.comparison.significance import format_p, holm
from digitlab.review import paired
from digitlab.review.paired import (
    METRICS,
    NoiseFloor,
    binomial_variance,
    compare,
    confidence_label,
    failure_matrix,
    failures,
    mismatch,
    noise_floor,
    tango_interval,
)

ACCURACY, ERRORS, NONDIGITS, DIGITS = METRICS


def answers(misread=(), refused=(), accepted=(), digits=100, nondigits=20, fingerprint="same") -> dict:
    """answers.json as evaluate writes it: digit indices misread or refused (a 7 read as 1), non-digits accepted."""
    wrong = [
        {"index": i, "label": 7, "answer": 1 if i in misread else 7, "confidence": 0.5, "refused": i in refused}
        for i in sorted(set(misread) | set(refused))
    ]
    return {
        "threshold": 0.5,
        "views": 1,
        "digits": {"count": digits, "fingerprint": fingerprint, "wrong": wrong},
        "nondigits": {
            "count": nondigits,
            "fingerprint": fingerprint,
            "wrong": [{"index": i, "kind": "letters", "answer": 4, "confidence": 0.9} for i in accepted],
        },
    }


def one_pair(fixed: int, broken: int, images: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Failure matrices of one run per side: the first `fixed` images fail in the base only, the next `broken`
    in the head only."""
    base, head = np.zeros((1, images), bool), np.zeros((1, images), bool)
    base[0, :fixed] = True
    head[0, fixed : fixed + broken] = True
    return base, head


def test_each_metric_counts_its_own_failures():
    base = answers(misread=[1, 2], refused=[2, 3], accepted=[5])
    assert failures(base, ACCURACY) == failures(base, ERRORS) == {1, 2}
    assert failures(base, DIGITS) == {2, 3}  # refused, whether read right (3) or not (2)
    assert failures(base, NONDIGITS) == {5}
    matrix = failure_matrix([base, answers(misread=[9])], ACCURACY)
    assert (
        matrix.shape == (2, 100) and set(np.flatnonzero(matrix[0])) == {1, 2} and set(np.flatnonzero(matrix[1])) == {9}
    )


def test_fixed_and_broken_are_the_images_that_changed():
    base, head = answers(misread=[1, 2, 3], accepted=[4]), answers(misread=[3, 9], accepted=[4, 6, 7])
    test = compare(ACCURACY, failure_matrix([base], ACCURACY), failure_matrix([head], ACCURACY), 0.05)
    assert (test.fixed, test.broken, test.images) == (2, 1, 100)
    test = compare(NONDIGITS, failure_matrix([base], NONDIGITS), failure_matrix([head], NONDIGITS), 0.05)
    assert (test.fixed, test.broken, test.images) == (0, 2, 20)


def test_one_run_per_side_is_mcnemars_exact_test_about_these_two_models():
    # 1 fixed and 9 broken of 10 changed: P = 2 * (C(10,0) + C(10,1)) / 2**10.
    test = compare(ACCURACY, *one_pair(1, 9), alpha=0.05)
    assert test.p_value == pytest.approx(22 / 1024)
    assert test.verdict == "worse" and test.change == pytest.approx(-8 / 10_000)
    assert (test.question, test.gates, test.dispersion_measured) == ("models", False, False)
    assert test.change_low < test.change < test.change_high < 0
    assert compare(ACCURACY, *one_pair(1, 9), alpha=0.01).verdict == "noise"  # 0.021 > 0.01


def test_as_many_fixed_as_broken_is_noise_and_nothing_changed_is_noise_too():
    assert compare(ACCURACY, *one_pair(15, 15), 0.05).verdict == "noise"
    test = compare(ACCURACY, *one_pair(0, 0), 0.05)
    assert (test.verdict, test.p_value, test.change) == ("noise", 1, 0)
    # Unconditional: nothing changed in 10,000 images still leaves a few images either way possible.
    assert -5e-4 < test.change_low < 0 < test.change_high < 5e-4


@pytest.mark.parametrize(
    "metric, verdict, sign",
    [
        (ACCURACY, "better", +1),  # fewer misread: accuracy up
        (ERRORS, "better", -1),  # fewer misread: errors down, counted in images
        (NONDIGITS, "better", +1),  # fewer non-digits accepted: the share refused up
        (DIGITS, "better", -1),  # fewer digits refused: the share refused down
    ],
)
def test_the_verdict_and_the_change_follow_the_metrics_direction(metric, verdict, sign):
    test = compare(metric, *one_pair(30, 5, 1000), 0.05)
    assert test.verdict == verdict and test.p_value < 1e-4
    scale = 1 if metric.per_image else 1000
    assert test.change == pytest.approx(sign * 25 / scale)
    assert sign * test.change_low > 0 and sign * test.change_high > 0  # the interval excludes no change
    assert compare(metric, *one_pair(5, 30, 1000), 0.05).verdict == "worse"


def test_tangos_interval_solves_the_score_equation_with_the_constrained_likelihood():
    fixed, broken, images = 5, 188, 1400
    low, high = tango_interval(fixed, broken, images, 1.96)

    def score(delta):  # the share broken maximising the likelihood given delta, found numerically
        same = images - fixed - broken

        def minus_log_likelihood(q):
            return -(fixed * math.log(q + delta) + broken * math.log(q) + same * math.log(1 - 2 * q - delta))

        q = minimize_scalar(
            minus_log_likelihood,
            bounds=(max(0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12),
            method="bounded",
            options={"xatol": 1e-14},
        ).x
        return (fixed - broken - images * delta) / math.sqrt(images * (2 * q + delta - delta**2))

    assert score(low) == pytest.approx(1.96, abs=1e-3) and score(high) == pytest.approx(-1.96, abs=1e-3)
    # Wider than the interval conditional on the 193 changed images (Clopper-Pearson of 5 in 193), which
    # covered the true change half the time.
    from scipy.stats import binomtest

    share = binomtest(5, 193).proportion_ci(0.95, method="exact")
    conditional = sorted(193 / images * (2 * end - 1) for end in (share.low, share.high))
    assert high - low > 2 * (conditional[1] - conditional[0])


def test_no_count_is_rounded():
    # 10 fixed and 3 broken: p = 0.092, noise. Against a known floor of 1.05 it must stay near that, not become
    # 10 of 12 (rounded: p = 0.039, better).
    floor = NoiseFloor(1.05, 1000, 20)
    test = compare(ACCURACY, *one_pair(10, 3), 0.05, floor)
    assert test.verdict == "noise" and 0.05 < test.p_value < 0.07
    assert (test.effective_fixed, test.effective_broken) == (pytest.approx(10 / 1.05), pytest.approx(3 / 1.05))
    # 2 fixed and 0 broken against a floor of 5: the estimate, +2 images, lies inside its interval.
    test = compare(ERRORS, *one_pair(2, 0), 0.05, NoiseFloor(5.0, 8, 10))
    assert test.change == -2 and test.change_low < -2 < test.change_high and test.effective_fixed == pytest.approx(0.4)


def test_the_dispersion_is_measured_from_both_sides_runs():
    rng = np.random.default_rng(0)
    # Runs that fail images independently (dispersion about 1) and runs that all fail the same 60 images plus
    # a run-wide share (dispersion far above 1).
    independent = rng.random((5, 5000)) < 0.05
    shared = np.zeros((5, 5000), bool)
    for run, extra in enumerate((0, 40, 0, 80, 20)):
        shared[run, 1000 : 1000 + 60 + extra] = True
    alone = noise_floor(independent, independent)[0]  # one side against itself: its own dispersion
    assert alone.df == 8 and 0.2 < alone.dispersion < 3
    assert noise_floor(shared, shared)[0].dispersion > 10
    # Each side with its own dispersion, so that a head whose seeds differ more is seen; Welch-Satterthwaite df.
    floor, seeds, within = noise_floor(independent, shared)
    parts = [noise_floor(side, side)[0].dispersion * binomial_variance(side) / 5 for side in (independent, shared)]
    assert seeds == pytest.approx(sum(parts)) and floor.dispersion == pytest.approx(seeds / within)
    assert floor.df == pytest.approx(sum(parts) ** 2 / sum(part**2 / 4 for part in parts)) and floor.runs == 10
    assert 4 < floor.df < 7  # most of it from the shared side's 4 df
    assert floor.dispersion > 5 * alone.dispersion
    assert 7 < noise_floor(independent, independent[::-1])[0].df <= 8  # alike: nearly both sides' 8 df


def test_several_runs_per_side_ask_about_retraining_and_a_noisy_floor_turns_a_split_into_noise():
    # Three runs a side. Each head run fixes images 0-11 and breaks 100-101 of its base run: 36 fixed, 6 broken.
    base = np.zeros((3, 1000), bool)
    base[:, :12] = True
    head = np.zeros((3, 1000), bool)
    head[:, 100:102] = True
    quiet = compare(ACCURACY, base, head, 0.05)
    assert (quiet.question, quiet.gates, quiet.pairs, quiet.fixed, quiet.broken) == ("retraining", True, 3, 36, 6)
    # Each side's runs failed the same images: seeds add nothing (dispersion 0, 4 df), the images are the sample.
    assert quiet.verdict == "better" and (quiet.dispersion, quiet.dispersion_df) == (0, 4)
    # The same images recurring over the pairs count once each: 12 and 2 effective images, not 36 and 6.
    assert (quiet.effective_fixed, quiet.effective_broken) == (pytest.approx(12), pytest.approx(2))
    assert quiet.change == pytest.approx(10 / 1000) and quiet.change_low < 0.01 < quiet.change_high
    # Now the runs of each side also differ among themselves by a run-wide 0, 30 or 60 more images: the
    # dispersion is large, and the same +10 images per run is noise.
    for runs in (base, head):
        for run, extra in enumerate((0, 30, 60)):
            runs[run, 200 + 100 * (runs is head) : 200 + 100 * (runs is head) + extra] = True
    noisy = compare(ACCURACY, base, head, 0.05)
    assert noisy.dispersion > 10 and noisy.verdict == "noise" and noisy.p_value > 0.05
    assert noisy.change_high - noisy.change_low > quiet.change_high - quiet.change_low


def test_runs_of_other_images_are_not_paired():
    assert mismatch(answers(), answers()) is None
    assert "test digits differ" in mismatch(answers(), answers(digits=99))
    assert "test nondigits differ" in mismatch(answers(), answers(nondigits=3))
    assert "differ" in mismatch(answers(), answers(fingerprint="other"))


def test_verdict_json_keeps_tiny_p_values_and_says_what_the_floor_rests_on():
    test = compare(ACCURACY, *one_pair(0, 80), 0.05)
    written = test.as_json()
    assert 0 < written["p_value"] < 1e-20
    assert written["dispersion_measured"] is False and written["dispersion_df"] == 0
    assert set(written) >= {
        "verdict",
        "question",
        "gates",
        "p_value",
        "fixed",
        "broken",
        "effective_fixed",
        "effective_broken",
        "images",
        "change_low",
        "change_high",
        "dispersion_runs",
    }
    assert paired.METRIC_NAMES == ("test.accuracy", "test.errors", "reject.nondigits", "reject.digits")
    assert ERRORS.same_test_as == "test.accuracy"


def test_p_values_are_never_rounded_across_or_onto_alpha():
    assert format_p(0.0496, 0.05) == "0.0496"
    assert format_p(0.05004, 0.05) == "0.05004"
    assert format_p(0.5, 0.05) == "0.5" and format_p(0.0034, 0.05) == "0.0034"
    assert format_p(1.8e-8, 0.05) == "1.8e-08"
    assert format_p(0.000104, 0.0001) == "0.000104"
    for p in np.linspace(0.001, 0.2, 2001):
        shown = float(format_p(p, 0.05))
        assert (shown < 0.05) == (p < 0.05) and shown != 0.05


def test_interval_labels_and_holms_correction():
    assert [confidence_label(a) for a in (0.05, 0.01, 0.005, 0.1)] == ["95%", "99%", "99.5%", "90%"]
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2]) == [0.2]
