"""Is a change real? Two versions' answers paired image by image, tested across the runs of each side.

Each run's answers.json says which test images it failed. Paired image by image, an image right in both versions
or wrong in both says nothing; the images a change FIXED (wrong before, right after) and BROKE say it all.

One run per side: McNemar's exact test (`binomtest` of fixed among fixed + broken at one half) asks whether
these two trained models differ. A seed's luck can make them differ, so that verdict does not gate CI unless a
noise floor measured earlier is given.

Several runs per side: a test of the reviewer's question, "retrained, is the head better on average?". The
statistic is D, the images fixed per run net of those broken (base's mean failures - head's). Its variance is
what seeds give, each side's failure counts varying over its own runs (as in Welch's test), plus what the
change's own effects on single images add beyond that. D / sqrt(variance) is referred to Student's t with
Welch-Satterthwaite degrees of freedom, since the seeds' part rests on a few runs. The DISPERSION reported is
how many times more runs differ than independent images would.
docs/review.md gives the choice, the interval and the simulation that checks them.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binomtest, norm, t


@dataclass(frozen=True)
class Metric:
    """A headline metric decided image by image: which images count as failures, and which way is better."""

    name: str
    answers: str  # the set of answers.json it reads: "digits" or "nondigits"
    failure: str  # "misread" (most probable digit not the label), "refused" (a digit refused), "accepted"
    higher_is_better: bool
    per_image: bool = False  # a count of images (test.errors), not a share of them
    same_test_as: str = ""  # another metric whose test this one repeats


# The metrics of reports/evaluate/metrics.json that a paired test decides, as `dvc metrics diff` names them.
METRICS = (
    Metric("test.accuracy", "digits", "misread", higher_is_better=True),
    Metric("test.errors", "digits", "misread", higher_is_better=False, per_image=True, same_test_as="test.accuracy"),
    Metric("reject.nondigits", "nondigits", "accepted", higher_is_better=True),  # test non-digits refused
    Metric("reject.digits", "digits", "refused", higher_is_better=False),  # test digits refused
)
ACCURACY, ERRORS, NONDIGITS_REFUSED, DIGITS_REFUSED = METRICS
METRIC_NAMES = tuple(metric.name for metric in METRICS)
BY_NAME = {metric.name: metric for metric in METRICS}


def failures(answers: dict, metric: Metric) -> set[int]:
    """The indices of the images that `metric` counts as failures in one version's answers.json."""
    wrong = answers[metric.answers]["wrong"]
    if metric.failure == "misread":
        return {row["index"] for row in wrong if row["answer"] != row["label"]}
    if metric.failure == "refused":
        return {row["index"] for row in wrong if row["refused"]}
    return {row["index"] for row in wrong}  # the non-digits listed are those accepted


def failure_matrix(runs: list[dict], metric: Metric) -> np.ndarray:
    """One row per run's answers.json, one column per image: True where `metric` counts a failure."""
    matrix = np.zeros((len(runs), runs[0][metric.answers]["count"]), dtype=bool)
    for row, answers in zip(matrix, runs):
        row[list(failures(answers, metric))] = True
    return matrix


def mismatch(base: dict, head: dict) -> str | None:
    """Why two answers.json files cannot be paired (they answered different images), or None."""
    for name in ("digits", "nondigits"):
        if (base[name]["count"], base[name]["fingerprint"]) != (head[name]["count"], head[name]["fingerprint"]):
            return (
                f"the test {name} differ ({base[name]['count']} images, {base[name]['fingerprint']} against "
                f"{head[name]['count']}, {head[name]['fingerprint']}): a change to preprocess or its params"
            )
    return None


@dataclass(frozen=True)
class NoiseFloor:
    """How many times more runs differ than independent images would, and what it rests on."""

    dispersion: float = 1.0
    df: float = 0.0  # degrees of freedom of the estimate: 0 = not measured
    runs: int = 0  # the runs it was measured from

    @property
    def measured(self) -> bool:
        return self.df > 0


def binomial_variance(runs: np.ndarray) -> float:
    """The variance of one run's failure count if each image failed independently of the others, estimated
    without bias from several runs (runs x images): the sum over images of p(1 - p)."""
    count, failed = len(runs), runs.sum(axis=0)
    return float((failed * (count - failed)).sum()) / (count * (count - 1))


def noise_floor(base: np.ndarray, head: np.ndarray) -> tuple[NoiseFloor, float, float]:
    """The noise floor of D's variance from each side's own runs, each side with its own dispersion (a change can
    make training less stable): the seeds' variance of D, its Welch-Satterthwaite degrees of freedom, and the
    dispersion overall (that variance over what independent images would give). Not held at 1 or above: an
    estimate from few runs is often low, and Student's t with those degrees of freedom allows for that."""
    runs = len(base)
    # Each side's failure counts vary over its runs by this much: their variance, of the side's mean over runs.
    parts = [(float(side.sum(axis=1).var(ddof=1)) / runs, runs - 1) for side in (base, head)]
    within = sum(binomial_variance(side) for side in (base, head)) / runs
    seeds = sum(variance for variance, _ in parts)
    # Runs that all failed the same images (seeds = 0) leave the sides' own degrees of freedom.
    df = seeds**2 / sum(v**2 / d for v, d in parts) if seeds > 0 else sum(d for _, d in parts)
    return NoiseFloor(seeds / within if within else 0.0, df, 2 * runs), seeds, within


@dataclass(frozen=True)
class Test:
    """The paired test of one metric between two sides, its verdict and the change with its interval."""

    metric: str
    verdict: str  # "better", "worse" or "noise"
    question: str  # "models": do these two trained models differ?  "retraining": is the change better on average?
    gates: bool  # whether --fail-on may fail on it: only a verdict held to a measured noise floor
    p_value: float
    fixed: int  # summed over the pairs of runs
    broken: int
    effective_fixed: float  # fixed and broken as independent images: what the test weighed
    effective_broken: float
    images: int  # per run
    pairs: int  # runs per side
    alpha: float
    change: float  # the mean change of the metric, head minus base
    change_low: float  # its (1 - alpha) confidence interval
    change_high: float
    dispersion: float  # the noise floor (1 with none measured)
    dispersion_df: float  # its degrees of freedom: 0 = not measured
    dispersion_runs: int  # the runs it was measured from
    same_test_as: str = ""

    @property
    def dispersion_measured(self) -> bool:
        return self.dispersion_df > 0

    def as_json(self) -> dict:
        """For verdict.json: the p-value to 4 significant digits (it can be 1e-20), the rest to 6 decimals."""
        rounded = {key: round(value, 6) if isinstance(value, float) else value for key, value in asdict(self).items()}
        return {**rounded, "p_value": float(f"{self.p_value:.4g}"), "dispersion_measured": self.dispersion_measured}


def tango_interval(fixed: float, broken: float, images: int, critical: float) -> tuple[float, float]:
    """Tango's (1998) score interval for fixed/images - broken/images, the change in the share of images failed,
    at a critical value of the score (1.96 for 95%). Unconditional on how many images changed, so it widens when
    the split is lopsided; it needs no rounding and stays inside [-1, 1] with no image changed."""
    same = images - fixed - broken

    def score(delta: float) -> float:
        # The constrained maximum-likelihood share broken, given a change of delta (the root of a quadratic).
        b = -(fixed * (1 - delta) + broken * (1 - 3 * delta) - 2 * same * delta)
        c = -broken * delta * (1 - delta)
        q = (-b + math.sqrt(max(b * b - 8 * images * c, 0.0))) / (4 * images)
        variance = images * (2 * q + delta * (1 - delta))
        return (fixed - broken - images * delta) / math.sqrt(variance) if variance > 0 else 0.0

    estimate = (fixed - broken) / images
    edge = 1 - 1e-12
    low = -edge if score(-edge) <= critical else brentq(lambda d: score(d) - critical, -edge, estimate)
    high = edge if score(edge) >= -critical else brentq(lambda d: score(d) + critical, estimate, edge)
    return low, high


def compare(metric: Metric, base: np.ndarray, head: np.ndarray, alpha: float, given: NoiseFloor | None = None) -> Test:
    """The paired test of `metric` between the base's and the head's runs (runs x images failure matrices, run i
    of one side paired with run i of the other), at significance level `alpha`, against the noise floor measured
    from each side's own runs; with one run a side, against `given` (a floor measured earlier) if any."""
    runs, images = base.shape
    if head.shape != base.shape:
        raise ValueError(f"the sides differ in shape: {base.shape} against {head.shape}")
    fixed = int((base & ~head).sum())
    broken = int((head & ~base).sum())
    # Per image, the net share of runs fixed; D is their sum, the images fixed per run net of those broken.
    net = base.mean(axis=0) - head.mean(axis=0)
    D = float(net.sum())

    # The variance of D: what seeds give (from each side's own runs, or a floor given for one run a side) and what
    # the change's own effects on single images add (their squares beyond what seeds give each image).
    if runs > 1:
        floor, seeds, within = noise_floor(base, head)
    else:
        floor, within = given or NoiseFloor(), fixed + broken
        seeds = floor.dispersion * within
    squares = float((net**2).sum())  # one run per side: fixed + broken, McNemar's variance
    test_variance = seeds + max(0.0, squares - within)
    spread = float(((net - net.mean()) ** 2).sum()) * images / max(images - 1, 1)  # about the mean, for the interval
    interval_variance = seeds + max(0.0, spread - within)

    df = math.inf
    if floor.measured and seeds > 0:
        # Satterthwaite: the part of the variance that rests on the estimated dispersion carries its few df.
        df = floor.df * (test_variance / seeds) ** 2
    reference = norm if math.isinf(df) else t(df)
    critical = float(reference.ppf(1 - alpha / 2))

    if not floor.measured:
        p_value = float(binomtest(fixed, fixed + broken, 0.5).pvalue) if fixed + broken else 1.0
    else:
        p_value = float(2 * reference.sf(abs(D) / math.sqrt(test_variance))) if test_variance > 0 else 1.0
    p_value = min(p_value, 1.0)

    if runs == 1:
        low, high = (
            images * end for end in tango_interval(fixed, broken, images, critical * math.sqrt(floor.dispersion))
        )
    else:
        half = critical * math.sqrt(interval_variance)
        low, high = D - half, D + half

    # The counts as independent images: divided by the dispersion and by how often one image recurs over pairs.
    factor = runs**2 * test_variance / (fixed + broken) if fixed + broken and test_variance else 1.0
    effective_fixed, effective_broken = fixed / factor, broken / factor

    # D is failures saved per run; a metric of successes (accuracy, non-digits refused) rises with it.
    scale = (1 if metric.per_image else 1 / images) * (1 if metric.higher_is_better else -1)
    change, low, high = D * scale, low * scale, high * scale
    low, high = sorted((low, high))
    if p_value >= alpha or D == 0:
        verdict = "noise"
    else:
        verdict = "better" if D > 0 else "worse"
    return Test(
        metric.name,
        verdict,
        "retraining" if floor.measured else "models",
        floor.measured,
        p_value,
        fixed,
        broken,
        effective_fixed,
        effective_broken,
        images,
        runs,
        alpha,
        change + 0.0,
        low + 0.0,
        high + 0.0,
        round(floor.dispersion, 3),
        round(floor.df, 2),
        floor.runs,
        metric.same_test_as,
    )


def confidence_label(alpha: float) -> str:
    """The interval's level as a percentage, with the digits it needs: 95%, 99.5%."""
    return f"{(1 - alpha) * 100:.10g}%"
