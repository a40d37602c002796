"""Is a change real? Two versions' answers paired image by image, and McNemar's exact test on them.

At 99.6% accuracy a change moves the test score by a few images, and so does a new seed. Totals cannot tell
the two apart; pairs can. Both versions answered the same test images (evaluate's answers.json), so each image
is one of: right in both, wrong in both, FIXED (wrong in the base, right in the head) or BROKEN (the other way).
Only the fixed and broken images say anything about the change. If the change did nothing but reshuffle which
borderline images fail, as another seed does, an image that changed is as likely to be fixed as broken:
fixed ~ Binomial(fixed + broken, 1/2). McNemar's exact test is that binomial test (SciPy's `binomtest`), and
its Clopper-Pearson interval for the share of fixed among the changed images gives an exact interval for the
change in accuracy, conditional on how many images changed.

Several runs per side (seeds 42, 43, 44 on both sides, say) are paired seed by seed, and their fixed and broken
counts added up before the test: under "no change" each pair's are a fair coin's, so their sums are too (the
stratified McNemar test). More runs, more changed images, a sharper test.

The noise floor. McNemar's test treats each trained model as fixed and the images as the sample, so it also
calls two seeds "different" when a seed's luck really made one model better, which happens in short runs
(3,000 images and 2 epochs: 257 to 374 errors over four seeds). The base side's own runs show how much seeds
differ: between two of them, z**2 = (fixed - broken)**2 / (fixed + broken) averages 1 if they differ as
independent images would, and the DISPERSION factor more if seeds add their own variation. With two or more
runs on the base side, the counts are divided by that factor (its mean over the pairs of base runs, at least
1) before the test: the effective number of independent changed images, as a design effect does in a survey.

A verdict per metric: "better" or "worse" where p < alpha, in the direction of the change; "noise" otherwise.
"""

import itertools
from dataclasses import asdict, dataclass

from scipy.stats import binomtest

VERDICTS = ("better", "worse", "noise")


@dataclass(frozen=True)
class Metric:
    """A headline metric decided image by image: which images count as failures, and which way is better."""

    name: str
    answers: str  # the set of answers.json it reads: "digits" or "nondigits"
    failure: str  # "misread" (most probable digit not the label), "refused" (a digit refused), "accepted"
    higher_is_better: bool
    per_image: bool = False  # a count of images (test.errors), not a share of them


# The metrics of reports/evaluate/metrics.json that a paired test decides, as `dvc metrics diff` names them.
METRICS = (
    Metric("test.accuracy", "digits", "misread", higher_is_better=True),
    Metric("test.errors", "digits", "misread", higher_is_better=False, per_image=True),
    Metric("reject.nondigits", "nondigits", "accepted", higher_is_better=True),  # test non-digits refused
    Metric("reject.digits", "digits", "refused", higher_is_better=False),  # test digits refused
)
ACCURACY, ERRORS, NONDIGITS_REFUSED, DIGITS_REFUSED = METRICS
METRIC_NAMES = tuple(metric.name for metric in METRICS)


def failures(answers: dict, metric: Metric) -> set[int]:
    """The indices of the images that `metric` counts as failures in one version's answers.json."""
    wrong = answers[metric.answers]["wrong"]
    if metric.failure == "misread":
        return {row["index"] for row in wrong if row["answer"] != row["label"]}
    if metric.failure == "refused":
        return {row["index"] for row in wrong if row["refused"]}
    return {row["index"] for row in wrong}  # the non-digits listed are those accepted


def mismatch(base: dict, head: dict) -> str | None:
    """Why two answers.json files cannot be paired (they answered different images), or None."""
    for name in ("digits", "nondigits"):
        if (base[name]["count"], base[name]["fingerprint"]) != (head[name]["count"], head[name]["fingerprint"]):
            return (f"the test {name} differ ({base[name]['count']} images, {base[name]['fingerprint']} against "
                    f"{head[name]['count']}, {head[name]['fingerprint']}): a change to preprocess or its params")
    return None


@dataclass(frozen=True)
class Counts:
    """One pair of versions on one metric: the images fixed and broken, out of `images`."""

    fixed: int
    broken: int
    images: int


def count(base: dict, head: dict, metric: Metric) -> Counts:
    base_failures, head_failures = failures(base, metric), failures(head, metric)
    return Counts(fixed=len(base_failures - head_failures), broken=len(head_failures - base_failures),
                  images=base[metric.answers]["count"])


@dataclass(frozen=True)
class Test:
    """McNemar's exact test on the fixed and broken images of one or more pairs, and its verdict."""

    metric: str
    verdict: str
    p_value: float
    fixed: int
    broken: int
    images: int  # per pair
    pairs: int
    alpha: float
    change: float  # the mean change of the metric, head minus base
    change_low: float  # its (1 - alpha) confidence interval
    change_high: float
    dispersion: float  # the noise floor the counts were divided by (1: none measured, or none found)

    def as_json(self) -> dict:
        """For verdict.json: the p-value to 4 significant digits (it can be 1e-20), the rest to 6 decimals."""
        rounded = {key: round(value, 6) if isinstance(value, float) else value for key, value in asdict(self).items()}
        return {**rounded, "p_value": float(f"{self.p_value:.4g}")}


def dispersion(base: list[dict], metric: Metric) -> float:
    """How many times more the base's runs differ from each other than independent images would: the mean of
    z**2 over the pairs of base runs, at least 1 (1 with a single run: no noise floor measured)."""
    squares = []
    for one, other in itertools.combinations(base, 2):
        counts = count(one, other, metric)
        if changed := counts.fixed + counts.broken:
            squares.append((counts.fixed - counts.broken) ** 2 / changed)
    return max(1.0, sum(squares) / len(squares)) if squares else 1.0


def mcnemar(metric: Metric, counts: list[Counts], alpha: float, dispersion: float = 1.0) -> Test:
    """McNemar's exact test on the sum of `counts` (one per pair of runs), at significance level `alpha`,
    the counts first divided by `dispersion` (the noise floor)."""
    fixed, broken = sum(c.fixed for c in counts), sum(c.broken for c in counts)
    images, changed = counts[0].images, fixed + broken
    effective_fixed, effective_changed = round(fixed / dispersion), round(changed / dispersion)
    if effective_changed:
        result = binomtest(effective_fixed, effective_changed, 0.5)  # two-sided, exact
        interval = result.proportion_ci(confidence_level=1 - alpha, method="exact")
        p_value, low_share, high_share = float(result.pvalue), interval.low, interval.high
    else:
        p_value, low_share, high_share = 1.0, 0.5, 0.5
    # Per pair, failures change by (broken - fixed) / pairs = changed * (1 - 2 * share fixed) / pairs; a metric
    # that counts successes (accuracy, non-digits refused) moves the other way.
    scale = changed / len(counts) / (1 if metric.per_image else images) * (-1 if metric.higher_is_better else 1)
    change = scale * (1 - 2 * fixed / changed) if changed else 0.0
    low, high = sorted(scale * (1 - 2 * share) for share in (low_share, high_share))
    if p_value >= alpha or fixed == broken:
        verdict = "noise"
    else:
        verdict = "better" if fixed > broken else "worse"
    return Test(metric.name, verdict, p_value, fixed, broken, images, len(counts), alpha,
                change + 0.0, low + 0.0, high + 0.0, round(dispersion, 3))
