"""Simulated reviews: per-image answers from a latent model of test images and seeds, judged by the review's
own `paired.compare`. tests/test_verdict_promise.py asserts the verdict's promises on them; run this module to
print the false-alarm, power and coverage table of docs/review.md with more reviews per cell:

    python -m tests.simulated_reviews --reviews 2000

The model: image i has a difficulty (a logit, drawn afresh for every simulated test set); a run adds its seed's
shift, one for all images and one per class of images, so that a seed's luck moves many images together. The
shift's size is set so that two runs differ DISPERSION times more than independent images would (z**2 between
seeds: 1, 2 or 10). A change moves each image's difficulty by its own amount.
"""

import argparse
import time
from dataclasses import dataclass

import numpy as np

from digitlab.review.paired import ACCURACY, NoiseFloor, compare, noise_floor

IMAGES = 2000  # the hard part of a test set: the images that never fail change nothing in the test
CLASSES = 10
DIFFICULTY = (-3.0, 1.5)  # mean and spread of the images' logits: about 8% failed, a short run's hard images
# The seed shift's standard deviation (global and per class alike) for each target dispersion, found by
# `calibrate` below and checked by tests/test_verdict_promise.py.
SHIFTS = {1: 0.0, 2: 0.077, 10: 0.240}


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@dataclass(frozen=True)
class Change:
    """A change's effect on each image's logit: a mean (negative: fewer failures) and a spread between images;
    or `shuffled`: the head finds other images hard, as hard as the base's within each class, so that its
    effects on single images cancel exactly in every test set (fixed and broken images, no change on average)."""

    mean: float = 0.0
    spread: float = 0.0
    shuffled: bool = False


def runs_of(rng, difficulty: np.ndarray, runs: int, shift: float) -> np.ndarray:
    """Failures of `runs` trained models (runs x images) on a test set of these difficulties."""
    classes = np.arange(difficulty.shape[-1]) % CLASSES
    seed = rng.normal(0, shift, (runs, 1)) + rng.normal(0, shift, (runs, CLASSES))[:, classes]
    return rng.random((runs, difficulty.shape[-1])) < sigmoid(difficulty + seed)


def review(
    rng, runs: int, dispersion: int, change: Change = Change(), images: int = IMAGES, head_dispersion: int | None = None
):
    """One simulated test set and both sides' runs on it: (base, head) failure matrices. The head's seeds may
    differ more than the base's (`head_dispersion`): a change that makes training less stable."""
    difficulty = rng.normal(*DIFFICULTY, images)
    effect = rng.normal(change.mean, change.spread, images) if change.spread else change.mean
    shift = SHIFTS[dispersion]
    changed = difficulty + effect
    if change.shuffled:
        for first in range(CLASSES):
            changed[first::CLASSES] = rng.permutation(changed[first::CLASSES])
    head_shift = SHIFTS[dispersion if head_dispersion is None else head_dispersion]
    return runs_of(rng, difficulty, runs, shift), runs_of(rng, changed, runs, head_shift)


def true_change(
    change: Change, dispersion: int, samples: int = 2_000_000, seed: int = 0, head_dispersion: int | None = None
) -> float:
    """The change in accuracy over all images and all seeds (Monte Carlo with common random numbers)."""
    rng = np.random.default_rng(seed)
    difficulty, seed_noise = rng.normal(*DIFFICULTY, samples), rng.normal(0, np.sqrt(2), samples)
    head_shift = SHIFTS[dispersion if head_dispersion is None else head_dispersion]
    effect = rng.normal(change.mean, change.spread, samples)
    return float(
        np.mean(
            sigmoid(difficulty + SHIFTS[dispersion] * seed_noise)
            - sigmoid(difficulty + effect + head_shift * seed_noise)
        )
    )


def measured_dispersion(rng, dispersion: int, reviews: int = 200, runs: int = 5) -> float:
    """The mean dispersion of simulated sides of `runs` runs, as the review measures one side against itself."""
    sides = (review(rng, runs, dispersion)[0] for _ in range(reviews))
    return float(np.mean([noise_floor(side, side)[0].dispersion for side in sides]))


def calibrate(target: float, rng) -> float:
    """The seed shift that gives a dispersion of `target` (bisection; for SHIFTS)."""
    low, high = 0.0, 1.0
    for _ in range(14):
        SHIFTS[-1] = (low + high) / 2
        low, high = (SHIFTS[-1], high) if measured_dispersion(rng, -1, 100) < target else (low, SHIFTS[-1])
    return SHIFTS.pop(-1)


def known_floor(rng, dispersion: int, runs: int = 5) -> NoiseFloor:
    """A noise floor measured earlier, as a committed verdict.json holds it: from `runs` runs of each side."""
    return noise_floor(*review(rng, runs, dispersion))[0]


def rates(
    rng,
    reviews: int,
    runs: int,
    dispersion: int,
    change: Change = Change(),
    alpha: float = 0.05,
    given: bool = False,
    truth: float | None = None,
    head_dispersion: int | None = None,
) -> dict:
    """Over `reviews` simulated reviews: the share called better or worse, and the interval's coverage."""
    called = covered = 0
    for _ in range(reviews):
        base, head = review(rng, runs, dispersion, change, head_dispersion=head_dispersion)
        floor = known_floor(rng, dispersion) if given else None
        test = compare(ACCURACY, base, head, alpha, floor)
        called += test.verdict != "noise"
        if truth is not None:
            covered += test.change_low <= truth <= test.change_high
    return {"called": called / reviews, "covered": covered / reviews if truth is not None else None}


def old_method(base: np.ndarray, head: np.ndarray, alpha: float) -> bool:
    """The review before issue 40, for the record: McNemar's test on fixed and broken summed over the pairs,
    divided by the base side's own dispersion (at least 1) and rounded. True where it called better or worse."""
    from itertools import combinations

    from scipy.stats import binomtest

    squares = [
        ((one & ~other).sum() - (other & ~one).sum()) ** 2 / max(1, (one ^ other).sum())
        for one, other in combinations(base, 2)
    ]
    factor = max(1.0, float(np.mean(squares))) if squares else 1.0
    fixed, broken = int((base & ~head).sum()), int((head & ~base).sum())
    effective_fixed, effective_changed = round(fixed / factor), round((fixed + broken) / factor)
    return bool(effective_changed) and binomtest(effective_fixed, effective_changed).pvalue < alpha and fixed != broken


def candidates(rng, reviews: int, runs: int, dispersion: int, change: Change = Change(), alpha: float = 0.05) -> dict:
    """The share called better or worse by each candidate test on the same simulated reviews."""
    from scipy.stats import ttest_ind, ttest_rel

    called = {"chosen": 0, "welch": 0, "paired t": 0, "old": 0}
    for _ in range(reviews):
        base, head = review(rng, runs, dispersion, change)
        called["chosen"] += compare(ACCURACY, base, head, alpha).verdict != "noise"
        called["old"] += old_method(base, head, alpha)
        totals = base.sum(axis=1), head.sum(axis=1)
        if runs > 1:
            called["welch"] += bool(ttest_ind(*totals, equal_var=False).pvalue < alpha)
            called["paired t"] += bool(ttest_rel(*totals).pvalue < alpha)
    return {name: count / reviews for name, count in called.items()}


def two_models(rng, reviews: int, fixed: int, broken: int, images: int, alpha: float = 0.05) -> float:
    """One run per side, the two models fixed: test sets of `images` drawn from a population where they fix and
    break images at the shares fixed/images and broken/images. The share of intervals covering the true change."""
    truth = (fixed - broken) / images
    counts = rng.multinomial(images, [fixed / images, broken / images, 1 - (fixed + broken) / images], reviews)
    covered = 0
    for drawn_fixed, drawn_broken, _ in counts:
        base, head = np.zeros((1, images), bool), np.zeros((1, images), bool)
        base[0, :drawn_fixed] = True
        head[0, drawn_fixed : drawn_fixed + drawn_broken] = True
        test = compare(ACCURACY, base, head, alpha)
        covered += test.change_low <= truth <= test.change_high
    return covered / reviews


def standard_error(rate: float, reviews: int) -> float:
    return float(np.sqrt(rate * (1 - rate) / reviews))


def main() -> None:
    parser = argparse.ArgumentParser(description="the verdict's false alarms, power and coverage, simulated")
    parser.add_argument("--reviews", type=int, default=1000, help="simulated reviews per cell (default 1000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(
        f"False 'better/worse' at alpha 0.05, nothing changed ({args.reviews} reviews a cell; "
        f"one run per side: 'the models differ'):"
    )
    print("| dispersion | 1 run per side | 1 run, floor given | 2 runs | 3 runs | 5 runs | 5 runs, effects cancel |")
    print("|---|---|---|---|---|---|---|")
    for dispersion in SHIFTS:
        cells = [
            rates(rng, args.reviews, 1, dispersion)["called"],
            rates(rng, args.reviews, 1, dispersion, given=True)["called"],
        ]
        cells += [rates(rng, args.reviews, runs, dispersion)["called"] for runs in (2, 3, 5)]
        cells.append(rates(rng, args.reviews, 5, dispersion, Change(shuffled=True))["called"])
        print(f"| {dispersion} | " + " | ".join(f"{c:.1%}" for c in cells) + " |")
    print(f"\nPower at 5 runs per side ({args.reviews} reviews a cell):")
    for mean in (-0.1, -0.2, -0.3):
        for dispersion in SHIFTS:
            truth = true_change(Change(mean, 0.3), dispersion)
            result = rates(rng, args.reviews, 5, dispersion, Change(mean, 0.3), truth=truth)
            print(
                f"logit change {mean:+}, spread 0.3, dispersion {dispersion}: accuracy {truth:+.4f}, "
                f"called {result['called']:.1%}, interval covers {result['covered']:.1%}"
            )
    for fixed, broken, images in ((5, 188, 1400), (9, 52, 10_000)):
        print(
            f"One run per side, {fixed} fixed and {broken} broken of {images:,}: the interval covers "
            f"{two_models(rng, args.reviews, fixed, broken, images):.1%}"
        )
    print(
        f"\nThe candidates on the same reviews ({args.reviews} a cell): false alarms with nothing changed, and "
        "power for a logit change of -0.3 (spread 0.3):"
    )
    print("| runs per side | dispersion | chosen | Welch t on run totals | paired t on per-seed changes | before |")
    print("|---|---|---|---|---|---|")
    for change in (Change(), Change(-0.3, 0.3)):
        for runs in (2, 3, 5):
            for dispersion in SHIFTS:
                result = candidates(rng, args.reviews, runs, dispersion, change)
                print(
                    f"| {runs} | {dispersion} | "
                    + " | ".join(f"{result[name]:.1%}" for name in ("chosen", "welch", "paired t", "old"))
                    + " |"
                )
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
