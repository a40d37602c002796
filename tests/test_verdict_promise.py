"""The verdict's promise, checked by simulation (tests/simulated_reviews.py): seed noise is called "better" or
"worse" at most alpha of the time, a real change is found, and the interval covers the true change.

Each rate is measured over a few hundred simulated reviews judged by the review's own `paired.compare`, and
held to its promise plus two of the simulation's standard errors. The generator is seeded: a failure is the
method's, not luck's.
"""

import numpy as np
import pytest

from digitlab.review.paired import ACCURACY, compare
from tests.simulated_reviews import (
    SHIFTS,
    Change,
    known_floor,
    measured_dispersion,
    rates,
    review,
    standard_error,
    true_change,
    two_models,
)

ALPHA = 0.05
REVIEWS = 400
BOUND = ALPHA + 2 * standard_error(ALPHA, REVIEWS)  # 6.1%


@pytest.mark.parametrize("dispersion", sorted(SHIFTS))
def test_the_simulated_seeds_differ_as_much_as_their_dispersion_says(dispersion):
    assert measured_dispersion(np.random.default_rng(dispersion), dispersion, 300) == pytest.approx(
        dispersion, rel=0.15
    )


@pytest.mark.parametrize("runs", [2, 3, 5])
@pytest.mark.parametrize("dispersion", sorted(SHIFTS))
def test_several_runs_call_seed_noise_better_or_worse_at_most_alpha_of_the_time(dispersion, runs):
    rng = np.random.default_rng(100 * dispersion + runs)
    assert rates(rng, REVIEWS, runs, dispersion)["called"] <= BOUND


def test_effects_on_single_images_that_cancel_are_not_counted_once_per_pair():
    # The head finds other images hard than the base, as many: fixed and broken images aplenty in each pair, the
    # same ones pair after pair, and no change on average.
    assert rates(np.random.default_rng(7), REVIEWS, 5, 2, Change(shuffled=True))["called"] <= BOUND


@pytest.mark.parametrize("dispersion", sorted(SHIFTS))
def test_one_run_per_side_never_gates_without_a_floor_and_keeps_alpha_with_one(dispersion):
    rng = np.random.default_rng(dispersion)
    called = 0
    for _ in range(REVIEWS):
        test = compare(ACCURACY, *review(rng, 1, dispersion), ALPHA)
        assert not test.gates and test.question == "models"
        called += test.verdict != "noise"
    if dispersion == 1:  # the two models are alike but for chance: "they differ" at most alpha of the time
        assert called / REVIEWS <= BOUND
    # With a floor measured earlier (5 runs a side of the same kind of run), the verdict gates, and keeps alpha.
    assert compare(ACCURACY, *review(rng, 1, dispersion), ALPHA, known_floor(rng, dispersion)).gates
    assert rates(rng, REVIEWS, 1, dispersion, given=True)["called"] <= BOUND


def test_a_real_change_is_found_at_five_runs_per_side_and_its_interval_covers_it():
    # A change that takes 0.3 from each hard image's logit (spread 0.3 between images): about 1.8 points of
    # accuracy on the hard images. At dispersion 2, five runs a side find it 80% of the time or more.
    change = Change(-0.3, 0.3)
    truth = true_change(change, 2)
    assert truth == pytest.approx(0.018, abs=0.001)
    result = rates(np.random.default_rng(11), REVIEWS, 5, 2, change, truth=truth)
    assert result["called"] >= 0.80
    assert result["covered"] >= 0.95 - 2 * standard_error(0.95, REVIEWS)


@pytest.mark.parametrize("runs, dispersion", [(2, 10), (3, 1), (5, 10)])
def test_the_interval_covers_the_true_change_over_retraining(runs, dispersion):
    change = Change(-0.2, 0.5)
    truth = true_change(change, dispersion)
    result = rates(np.random.default_rng(runs + dispersion), REVIEWS, runs, dispersion, change, truth=truth)
    assert result["covered"] >= 0.95 - 2 * standard_error(0.95, REVIEWS)


@pytest.mark.parametrize("fixed, broken, images", [(5, 188, 1400), (9, 52, 10_000), (0, 3, 10_000)])
def test_one_runs_interval_covers_the_change_between_two_models_even_when_lopsided(fixed, broken, images):
    # Conditional on how many images changed, the interval covered the first case about half the time.
    covered = two_models(np.random.default_rng(fixed), 1000, fixed, broken, images)
    assert covered >= 0.95 - 2 * standard_error(0.95, 1000)


def test_a_change_that_makes_training_less_stable_is_seen_in_the_interval():
    # The head's seeds differ ten times more than independent images would, the base's not at all: a floor
    # measured on the base alone would take the head's noise for a change.
    truth = true_change(Change(), 1, head_dispersion=10)
    result = rates(np.random.default_rng(3), REVIEWS, 5, 1, truth=truth, head_dispersion=10)
    assert result["covered"] >= 0.95 - 2 * standard_error(0.95, REVIEWS)
