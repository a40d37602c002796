"""McNemar's exact test on paired answers (digitlab/review/paired.py): counts, directions, p-values, pooling."""

import pytest

from digitlab.review import paired
from digitlab.review.paired import METRICS, Counts, count, dispersion, failures, mcnemar, mismatch

ACCURACY, ERRORS, NONDIGITS, DIGITS = METRICS


def answers(misread=(), refused=(), accepted=(), digits=100, nondigits=20, fingerprint="same") -> dict:
    """answers.json as evaluate writes it: digit indices misread or refused (a 7 read as 1), non-digits accepted."""
    wrong = [{"index": i, "label": 7, "answer": 1 if i in misread else 7, "confidence": 0.5, "refused": i in refused}
             for i in sorted(set(misread) | set(refused))]
    return {"threshold": 0.5, "views": 1,
            "digits": {"count": digits, "fingerprint": fingerprint, "wrong": wrong},
            "nondigits": {"count": nondigits, "fingerprint": fingerprint, "wrong": [
                {"index": i, "kind": "letters", "answer": 4, "confidence": 0.9} for i in accepted]}}


def test_each_metric_counts_its_own_failures():
    base = answers(misread=[1, 2], refused=[2, 3], accepted=[5])
    assert failures(base, ACCURACY) == failures(base, ERRORS) == {1, 2}
    assert failures(base, DIGITS) == {2, 3}  # refused, whether read right (3) or not (2)
    assert failures(base, NONDIGITS) == {5}


def test_fixed_and_broken_are_the_images_that_changed():
    base, head = answers(misread=[1, 2, 3], accepted=[4]), answers(misread=[3, 9], accepted=[4, 6, 7])
    assert count(base, head, ACCURACY) == Counts(fixed=2, broken=1, images=100)
    assert count(base, head, NONDIGITS) == Counts(fixed=0, broken=2, images=20)


def test_the_p_value_is_the_exact_two_sided_binomial_one():
    # 1 fixed and 9 broken of 10 changed: P = 2 * (C(10,0) + C(10,1)) / 2**10.
    test = mcnemar(ACCURACY, [Counts(1, 9, 10_000)], alpha=0.05)
    assert test.p_value == pytest.approx(22 / 1024)
    assert test.verdict == "worse" and test.change == pytest.approx(-8 / 10_000)
    assert test.change_low < test.change < test.change_high < 0
    assert mcnemar(ACCURACY, [Counts(1, 9, 10_000)], alpha=0.01).verdict == "noise"  # 0.021 > 0.01


def test_as_many_fixed_as_broken_is_noise_and_nothing_changed_is_noise_too():
    assert mcnemar(ACCURACY, [Counts(15, 15, 10_000)], 0.05).verdict == "noise"
    test = mcnemar(ACCURACY, [Counts(0, 0, 10_000)], 0.05)
    assert (test.verdict, test.p_value, test.change, test.change_low, test.change_high) == ("noise", 1, 0, 0, 0)


@pytest.mark.parametrize("metric, verdict, sign", [
    (ACCURACY, "better", +1),  # fewer misread: accuracy up
    (ERRORS, "better", -1),  # fewer misread: errors down, counted in images
    (NONDIGITS, "better", +1),  # fewer non-digits accepted: the share refused up
    (DIGITS, "better", -1),  # fewer digits refused: the share refused down
])
def test_the_verdict_and_the_change_follow_the_metrics_direction(metric, verdict, sign):
    test = mcnemar(metric, [Counts(30, 5, 1000)], 0.05)
    assert test.verdict == verdict and test.p_value < 1e-4
    scale = 1 if metric.per_image else 1000
    assert test.change == pytest.approx(sign * 25 / scale)
    assert sign * test.change_low > 0 and sign * test.change_high > 0  # the interval excludes no change
    assert mcnemar(metric, [Counts(5, 30, 1000)], 0.05).verdict == "worse"


def test_several_pairs_are_pooled_into_one_sharper_test():
    one = mcnemar(ACCURACY, [Counts(6, 1, 10_000)], 0.05)
    three = mcnemar(ACCURACY, [Counts(6, 1, 10_000)] * 3, 0.05)
    assert one.verdict == "noise" and one.p_value > 0.05
    assert three.verdict == "better" and three.p_value < 0.002 and (three.fixed, three.broken) == (18, 3)
    assert three.change == pytest.approx(5 / 10_000)  # the mean change per pair
    assert three.as_json()["pairs"] == 3


def test_answers_of_other_images_are_not_paired():
    assert mismatch(answers(), answers()) is None
    assert "test digits differ" in mismatch(answers(), answers(digits=99))
    assert "test nondigits differ" in mismatch(answers(), answers(nondigits=3))
    assert "differ" in mismatch(answers(), answers(fingerprint="other"))


def test_verdict_json_keeps_tiny_p_values():
    test = mcnemar(ACCURACY, [Counts(0, 80, 10_000)], 0.05)
    assert 0 < test.as_json()["p_value"] < 1e-20
    assert set(test.as_json()) >= {"verdict", "p_value", "fixed", "broken", "images", "change_low", "change_high"}
    assert paired.METRIC_NAMES == ("test.accuracy", "test.errors", "reject.nondigits", "reject.digits")


def test_the_noise_floor_of_seeds_that_differ_for_real_turns_a_verdict_into_noise():
    # Two base runs: one misreads images 0-59, the other 60-79 (z**2 = 40**2 / 80 = 20: seeds that differ
    # twenty times more than independent images would).
    base = [answers(misread=range(60)), answers(misread=range(60, 80))]
    assert dispersion(base, ACCURACY) == pytest.approx(20)
    assert dispersion(base[:1], ACCURACY) == 1  # one run: nothing to measure
    assert dispersion([base[0], base[0]], ACCURACY) == 1  # identical runs: at least 1
    # 10 fixed and 30 broken: worse for McNemar alone (p = 0.002), noise against that floor.
    assert mcnemar(ACCURACY, [Counts(10, 30, 100)], 0.05).verdict == "worse"
    floored = mcnemar(ACCURACY, [Counts(10, 30, 100)], 0.05, dispersion=20)
    assert floored.verdict == "noise" and floored.dispersion == 20
    assert floored.change == pytest.approx(-0.2)  # the change itself is what it is; its interval is wider
    plain = mcnemar(ACCURACY, [Counts(10, 30, 100)], 0.05)
    assert floored.change_high - floored.change_low > plain.change_high - plain.change_low
