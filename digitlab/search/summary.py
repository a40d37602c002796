"""reports/search/STUDY.md and STUDY.png: the trials, the history or Pareto front, the parameters' importances."""

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
from optuna.trial import TrialState

from digitlab.files.atomic import write_text
from digitlab.search.space import Search  # digitlab.shared, which it imports, chooses Matplotlib's file backend

REPORTS = Path("reports/search")


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(study: optuna.Study, search: Search) -> str:
    keys = list(search.space)
    header = ["trial", "experiment", "state", *keys, *(o.metric for o in search.objectives), "seconds", "note"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.WAITING:
            continue
        values = [_value(v) for v in trial.values] if trial.values else ["-"] * len(search.objectives)
        note = trial.user_attrs.get("error", "")
        if "log" in trial.user_attrs:
            note += f" (log: `{trial.user_attrs['log']}`)"
        if trial.user_attrs.get("interrupted"):
            note = "interrupted (Ctrl-C); run again"
        if "retry_of" in trial.user_attrs:
            note = f"trial {trial.user_attrs['retry_of']} again"
        cells = [
            str(trial.number),
            f"`{trial.user_attrs.get('experiment', '-')}`",
            trial.state.name.lower(),
            *(_value(trial.params.get(key, "-")) for key in keys),
            *values,
            _value(trial.user_attrs.get("seconds", "-")),
            note.replace("|", "/"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def importances(study: optuna.Study, search: Search) -> str:
    """The parameters' importances per objective, by Optuna's default evaluator (PED-ANOVA since Optuna 5)."""
    lines = []
    for index, objective in enumerate(search.objectives):
        try:
            with warnings.catch_warnings():  # with few trials Optuna warns that importances come out equal
                warnings.simplefilter("ignore")
                found = optuna.importance.get_param_importances(study, target=lambda t, i=index: t.values[i])
        except (RuntimeError, ValueError) as error:
            return f"Not yet: {error}"
        lines.append(f"- {objective.metric}: " + ", ".join(f"{key} {share:.0%}" for key, share in found.items()))
    return "\n".join(lines)


def draw(study: optuna.Study, search: Search, path: Path) -> None:
    """The optimisation history (one objective) or the Pareto front (two), as Optuna draws them."""
    names = [objective.metric for objective in search.objectives]
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna calls its Matplotlib plots so
    if len(names) == 1:
        axes = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=names[0])
    else:
        axes = optuna.visualization.matplotlib.plot_pareto_front(study, target_names=names)
    axes.figure.set_size_inches(7, 4.5)
    axes.figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    axes.figure.savefig(path, dpi=100)
    plt.close(axes.figure)


def write_summary(study: optuna.Study, search: Search, name: str, verdict: str = "") -> Path:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    path = REPORTS / f"{name}.md"
    sections = [
        f"# Search: {name}",
        f"{len(complete)} trials complete of {search.trials}; objectives: "
        + ", ".join(f"{o.metric} ({o.direction})" for o in search.objectives)
        + "; fixed: "
        + (", ".join(f"{k}={v}" for k, v in search.fixed.items()) or "nothing")
        + f"; seed {search.seed}. Each trial is a DVC experiment: `dvc exp show`, `dvc exp apply NAME`.",
        "## Trials",
        trials_table(study, search),
    ]
    if complete:
        draw(study, search, REPORTS / f"{name}.png")
        title = "History" if len(search.objectives) == 1 else "Pareto front"
        sections += [f"## {title}", f"![{title}]({name}.png)", "## Importances", importances(study, search)]
    if verdict:
        sections += ["## Verdict", verdict]
    write_text(path, "\n\n".join(sections) + "\n")
    return path
