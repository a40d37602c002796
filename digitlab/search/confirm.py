"""A winner beyond seed noise: the study's best trials and the default, re-run with the same seeds, compared.

A study chooses on one seed, and at this project's accuracy a seed's luck is most of the difference between
trials. So the best few trials and the default (params.yaml with the study's fixed overrides) are trained
again with each of search.yaml's `confirm.seeds`, the same seeds on both sides, and each candidate's
validation accuracy is compared with the default's across those runs: Welch's t-test on the runs' values,
which is the seeds' part of the review's test across runs (validation has no per-image answers to pair),
with Holm's correction over the candidates. The verdict is better, worse or noise; noise is a result.
"""

from dataclasses import dataclass

from digitlab.shared.errors import UserError

import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import ttest_ind

from digitlab.comparison.significance import format_p, holm
from digitlab.search.space import Search
from digitlab.search.trials import describe, experiment_commit, metric, read_metrics, run_trial

ALPHA = 0.05


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class Candidate:
    """A trial, or the default, re-run with each seed: its values of the first objective."""

    name: str
    params: dict
    values: list[float]


def candidates(study: optuna.Study, search: Search) -> list[FrozenTrial]:
    """The best `confirm.best` complete trials by the first objective (on the Pareto front first, with two)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise UserError("the study has no complete trial to confirm; run `python -m digitlab.search` first")
    front = {t.number for t in study.best_trials}
    sign = -1 if search.objectives[0].direction == "maximize" else 1
    ranked = sorted(complete, key=lambda t: (t.number not in front, sign * t.values[0], t.number))
    return ranked[: search.confirm.best]


def rerun(name: str, values: dict, search: Search, logs) -> Candidate:
    """Train `values` (with the study's fixed overrides) once per confirmation seed; the first objective's values."""
    objective = search.objectives[0]
    found = []
    for seed in search.confirm.seeds:
        experiment = f"{name}-s{seed}"
        if commit := experiment_commit(experiment):  # a confirmation run interrupted before: what ran stays
            outcome_metrics = read_metrics(commit, [objective.file])
        else:
            print(f"search: confirming {experiment} with {describe(values) or 'the default'}", flush=True)
            outcome = run_trial(experiment, {**search.fixed, **values, "seed": seed}, [objective.file], logs)
            if outcome.metrics is None:
                raise UserError(f"the confirmation run {experiment} failed: {outcome.error} (log: {outcome.log})")
            outcome_metrics = outcome.metrics
        found.append(metric(outcome_metrics, objective.file, objective.metric))
    return Candidate(name, values, found)


def confirm(study: optuna.Study, search: Search, name: str, logs) -> str:
    """Re-run the best trials and the default with the confirmation seeds; the verdict as Markdown."""
    default = rerun(f"{name}-default", {}, search, logs)
    chosen = [
        (trial.number, rerun(f"{name}-confirm-{trial.number}", trial.params, search, logs))
        for trial in candidates(study, search)
    ]
    return verdict(default, chosen, search)


def verdict(default: Candidate, chosen: list[tuple[int, Candidate]], search: Search) -> str:
    """Each candidate against the default over the same seeds: Welch's t, Holm-corrected; Markdown."""
    objective = search.objectives[0]
    p_values = []
    for _, candidate in chosen:
        test = ttest_ind(candidate.values, default.values, equal_var=False)
        p_values.append(1.0 if test.pvalue != test.pvalue else float(test.pvalue))  # NaN: no spread at all
    seeds = ", ".join(map(str, search.confirm.seeds))
    rows = [
        f"| candidate | values | {objective.metric}, seeds {seeds} | mean | change | p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|",
        f"| default | params.yaml | {', '.join(f'{v:.5g}' for v in default.values)} | {mean(default.values):.5g} "
        "| | | |",
    ]
    better = []
    for (number, candidate), p in zip(chosen, holm(p_values)):
        change = mean(candidate.values) - mean(default.values)
        gain = change if objective.direction == "maximize" else -change
        called = "noise" if p >= ALPHA or change == 0 else ("better" if gain > 0 else "worse")
        if called == "better":
            better.append(f"trial {number}")
        rows.append(
            f"| trial {number} | {describe(candidate.params, ', ')} "
            f"| {', '.join(f'{v:.5g}' for v in candidate.values)} "
            f"| {mean(candidate.values):.5g} | {change:+.4g} | {format_p(p, ALPHA)} | **{called}** |"
        )
    how = (
        f"on validation ({objective.metric}; Welch's t over {len(search.confirm.seeds)} seeds a side, "
        f"Holm-corrected, alpha {ALPHA})"
    )
    if better:
        summary = (
            f"{' and '.join(better)} beat{'s' * (len(better) == 1)} the default beyond seed noise {how}. "
            "Read the test split only now, after the choice."
        )
    else:
        summary = f"No variant beats the default beyond seed noise {how}: keep the default. That is a result."
    return summary + "\n\n" + "\n".join(rows)
