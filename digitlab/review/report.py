"""Pull-request report: compare the workspace with a git revision, in Markdown with PNG plots.

Writes OUTPUT_DIR/report.md for the reviewer, comparing the workspace with REV (default: main):
  Test set             the headline scores at REV and in the workspace, and their change:
                       test accuracy, errors, loss, macro F1, calibration error (ECE), the shares of test
                       non-digits and digits refused as "not a digit", validation accuracy
  Parameters changed   `dvc params diff` as DVC prints it
  Metrics changed      `dvc metrics diff` as DVC prints it (changed metrics only), folded away
  Plots                PNGs drawn locally with Matplotlib from the plot data DVC uses (training curves,
                       per-class F1, reliability diagram, confusion matrices), plus the workspace's
                       most confident mistakes and sample predictions
No browser, no network: it reads git and the workspace only. The CI workflow posts report.md
as a pull-request comment.

Usage: python -m digitlab.review.report [--rev main] [--output reports/compare]
"""

import argparse
import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from digitlab.evaluation.scores import confusion_matrix
from digitlab.figures import grouped_bars, save
from digitlab.files.atomic import write_text
from digitlab.shared.errors import PipelineError, run_stage

CURVES = "reports/train/plots/metrics/{split}/{metric}.tsv"
SPLITS = {"train": "train", "eval": "validation"}
PER_CLASS = "reports/evaluate/per_class.json"
CALIBRATION = "reports/evaluate/calibration.json"
CONFUSION = "reports/evaluate/plots/sklearn/confusion_matrix.json"
IMAGES = ("reports/evaluate/mistakes.png", "reports/predict/samples.png")
# The rows of the report's first table, in this order: (metrics file, metric) as `dvc metrics diff` names them.
HEADLINE = (
    ("reports/evaluate/metrics.json", "test.accuracy"),
    ("reports/evaluate/metrics.json", "test.errors"),
    ("reports/evaluate/metrics.json", "test.loss"),
    ("reports/evaluate/metrics.json", "test.macro_f1"),
    ("reports/evaluate/metrics.json", "test.ece"),
    ("reports/evaluate/metrics.json", "reject.nondigits"),  # "not a digit": test non-digits refused...
    ("reports/evaluate/metrics.json", "reject.digits"),  # ... and test digits refused
    ("reports/train/metrics.json", "eval.accuracy"),  # on the validation images, the only non-test row
)


def command(*args: str) -> str:
    """Run a command (never through a shell) and return its output; fail with its message."""
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise PipelineError(f"`{' '.join(args)}` failed: {last_line}")
    return result.stdout


def read(rev: str | None, path: str) -> str | None:
    """A file's text in the workspace (rev None) or at a git revision; None where it does not exist."""
    if rev is None:
        return Path(path).read_text() if Path(path).exists() else None
    result = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def read_tsv(text: str) -> tuple[list[int], list[float]]:
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    metric = [name for name in rows[0] if name not in ("step", "timestamp")][0]
    return [int(row["step"]) for row in rows], [float(row[metric]) for row in rows]


def compare_lines(series: dict[str, tuple[list, list]], path, title: str, xlabel: str, ylabel: str,
                  dashed: str = "", diagonal: bool = False) -> None:
    """One line per labelled series of (x, y), e.g. "main: validation"; labels starting with `dashed` dashed."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, (x, y) in series.items():
        linestyle = "--" if dashed and label.startswith(dashed) else "-"
        axis.plot(x, y, marker="o", markersize=3, label=label, linestyle=linestyle)
    if diagonal:
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="perfect calibration")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save(figure, path)


def compare_bars(values: dict[str, list[float]], categories: list[str], path, title: str, ylabel: str) -> None:
    """Grouped bars: one group per category, one bar per labelled revision."""
    figure, axis = plt.subplots(figsize=(8, 4))
    grouped_bars(axis, values)
    axis.set_xticks(range(len(categories)), categories)
    low = min(min(heights) for heights in values.values())
    axis.set_ylim(max(0.0, low - (1 - low) * 0.5 - 0.001), 1.0)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8)
    save(figure, path)


def compare_confusions(matrices: dict[str, np.ndarray], path) -> None:
    """Confusion matrices of several revisions side by side, diagonal hidden so the errors stand out."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(6 * len(matrices), 5.5), squeeze=False)
    for axis, (label, matrix) in zip(axes.flat, matrices.items()):
        errors = matrix.copy()
        np.fill_diagonal(errors, 0)
        sns.heatmap(errors, annot=True, fmt="d", cmap="Reds", cbar=False, ax=axis, square=True)
        axis.set_xlabel("predicted digit")
        axis.set_ylabel("true digit")
        axis.set_title(f"{label}: {int(errors.sum())} errors (diagonal hidden)")
    save(figure, path)


def draw_plots(revisions: dict[str, str | None], output: Path) -> list[tuple[str, str]]:
    """Draw every comparison plot for which some revision has data; return (title, file name) pairs.

    The first revision is the reference: its lines are dashed.
    """
    drawn, reference = [], next(iter(revisions))
    for metric in ("accuracy", "loss"):
        series = {}
        for label, rev in revisions.items():
            for split, name in SPLITS.items():
                text = read(rev, CURVES.format(split=split, metric=metric))
                if text:
                    series[f"{label}: {name}"] = read_tsv(text)
        if series:
            compare_lines(series, output / f"{metric}.png", f"{metric.capitalize()} per epoch", "epoch", metric,
                          dashed=reference)
            drawn.append((f"{metric.capitalize()} per epoch", f"{metric}.png"))

    per_class = {label: json.loads(text) for label, rev in revisions.items() if (text := read(rev, PER_CLASS))}
    if per_class:
        digits = [row["digit"] for row in next(iter(per_class.values()))]
        compare_bars({label: [row["f1"] for row in rows] for label, rows in per_class.items()},
                     digits, output / "per_class_f1.png", "Per-class F1 on the test set", "F1")
        drawn.append(("Per-class F1", "per_class_f1.png"))

    calibration = {label: json.loads(text) for label, rev in revisions.items() if (text := read(rev, CALIBRATION))}
    if calibration:
        compare_lines(
            {label: ([r["confidence"] for r in rows], [r["accuracy"] for r in rows])
             for label, rows in calibration.items()},
            output / "reliability.png", "Reliability diagram (test)",
            "mean confidence in the bin", "accuracy in the bin", dashed=reference, diagonal=True,
        )
        drawn.append(("Reliability diagram", "reliability.png"))

    matrices = {}
    for label, rev in revisions.items():
        if text := read(rev, CONFUSION):
            pairs = json.loads(text)
            matrices[label] = confusion_matrix(np.array([int(p["actual"]) for p in pairs]),
                                               np.array([int(p["predicted"]) for p in pairs]))
    if matrices:
        compare_confusions(matrices, output / "confusion.png")
        drawn.append(("Confusion matrices", "confusion.png"))
    return drawn


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _change(delta) -> str:
    if delta is None:
        return "-"
    return f"{delta:+.5g}" if delta else "0"


def headline_table(metrics: dict, rev: str) -> str:
    """The HEADLINE rows of `dvc metrics diff --all --json`, in that order, as a Markdown table."""
    rows = []
    for path, metric in HEADLINE:
        if (change := metrics.get(path, {}).get(metric)) is not None:
            rows.append(f"| {metric} | {_cell(change.get('old'))} | {_cell(change.get('new'))} "
                        f"| {_change(change.get('diff'))} |")
    if not rows:
        return "None of the headline metrics was found."
    return "\n".join([f"| metric | {rev} | workspace | change |", "|---|---|---|---|", *rows])


def params_section(rev: str) -> str:
    """`dvc params diff` as DVC prints it; DVC lists only the changed params."""
    # With nothing changed, `--md` still prints the header of an empty table: ask the JSON instead.
    if not json.loads(command("dvc", "params", "diff", rev, "--json")):
        return "No parameter changed."
    return command("dvc", "params", "diff", rev, "--md").strip()


def metrics_section(metrics: dict, rev: str) -> str:
    """`dvc metrics diff` as DVC prints it (changed metrics only), folded under a count of changed and unchanged."""
    # A metric changed, as DVC decides, when its old and new values differ, one side missing included.
    changes = [change for by_name in metrics.values() for change in by_name.values()]
    changed = sum(change.get("old") != change.get("new") for change in changes)
    unchanged = len(changes) - changed
    if not changed:
        return f"No metric changed ({unchanged} unchanged)."
    table = command("dvc", "metrics", "diff", rev, "--md").strip()
    summary = f"{changed} metric{'s' if changed > 1 else ''} changed, {unchanged} unchanged"
    # GitHub renders Markdown inside <details> only with blank lines around it.
    return f"<details><summary>{summary}</summary>\n\n{table}\n\n</details>"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="main", help="git revision to compare the workspace with (default: main)")
    parser.add_argument("--output", type=Path, default=Path("reports/compare"))
    args = parser.parse_args(argv)
    if subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.rev}^{{commit}}"],
                      capture_output=True).returncode != 0:
        raise PipelineError(f"unknown git revision {args.rev!r}; give a branch, tag or commit with --rev")

    # DVC's answers first: if `dvc` fails, the report stops before writing any file.
    metrics = json.loads(command("dvc", "metrics", "diff", args.rev, "--all", "--json"))
    sections = [
        f"# Model report: workspace against `{args.rev}`",
        "## Test set", headline_table(metrics, args.rev),
        "## Parameters changed", params_section(args.rev),
        "## Metrics changed", metrics_section(metrics, args.rev),
    ]

    args.output.mkdir(parents=True, exist_ok=True)
    plots = draw_plots({args.rev: args.rev, "workspace": None}, args.output)
    sections += ["## Plots", *[f"### {title}\n\n![{title}]({name})" for title, name in plots]]
    for image in IMAGES:
        if Path(image).exists():
            name = image.replace("reports/", "").replace("/", "_")
            shutil.copyfile(image, args.output / name)
            sections.append(f"### {Path(image).stem.replace('_', ' ').capitalize()} ({image})\n\n![{image}]({name})")
    write_text(args.output / "report.md", "\n\n".join(sections) + "\n")
    print(f"report: {args.output / 'report.md'} compares the workspace with {args.rev}")


if __name__ == "__main__":
    run_stage(main)
