"""Pull-request report: compare the workspace with a git revision, in Markdown with PNG plots.

Writes OUTPUT_DIR/report.md with `dvc params diff` and `dvc metrics diff` against REV
(default: main), and PNG plots drawn locally with Matplotlib from the same plot data
DVC uses (training curves, per-class F1, reliability diagram, confusion matrices),
plus the most confident mistakes. No browser, no network: it reads git and the
workspace only. The CI workflow posts report.md as a pull-request comment.

Usage: python -m stages.report [--rev main] [--output reports/compare]
"""

import argparse
import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from stages import figures
from stages.atomic import write_text
from stages.errors import PipelineError, run_stage
from stages.scores import confusion_matrix

CURVES = "reports/train/plots/metrics/{split}/{metric}.tsv"
SPLITS = {"train": "train", "eval": "validation"}
PER_CLASS = "reports/evaluate/per_class.json"
CALIBRATION = "reports/evaluate/calibration.json"
CONFUSION = "reports/evaluate/plots/sklearn/confusion_matrix.json"
IMAGES = ("reports/evaluate/mistakes.png", "reports/predict/samples.png")


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
            figures.compare_lines(series, output / f"{metric}.png", f"{metric.capitalize()} per epoch", "epoch", metric,
                                  dashed=reference)
            drawn.append((f"{metric.capitalize()} per epoch", f"{metric}.png"))

    per_class = {label: json.loads(text) for label, rev in revisions.items() if (text := read(rev, PER_CLASS))}
    if per_class:
        digits = [row["digit"] for row in next(iter(per_class.values()))]
        figures.compare_bars({label: [row["f1"] for row in rows] for label, rows in per_class.items()},
                             digits, output / "per_class_f1.png", "Per-class F1 on the test set", "F1")
        drawn.append(("Per-class F1", "per_class_f1.png"))

    calibration = {label: json.loads(text) for label, rev in revisions.items() if (text := read(rev, CALIBRATION))}
    if calibration:
        figures.compare_lines(
            {label: ([r["confidence"] for r in rows], [r["accuracy"] for r in rows]) for label, rows in calibration.items()},
            output / "reliability.png", "Reliability diagram (test)", "mean confidence in the bin", "accuracy in the bin",
            dashed=reference, diagonal=True,
        )
        drawn.append(("Reliability diagram", "reliability.png"))

    matrices = {}
    for label, rev in revisions.items():
        if text := read(rev, CONFUSION):
            pairs = json.loads(text)
            matrices[label] = confusion_matrix(np.array([int(p["actual"]) for p in pairs]),
                                               np.array([int(p["predicted"]) for p in pairs]))
    if matrices:
        figures.compare_confusions(matrices, output / "confusion.png")
        drawn.append(("Confusion matrices", "confusion.png"))
    return drawn


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def params_table(diff: dict, rev: str) -> str:
    """`dvc params diff --json` as a Markdown table; only changed params are listed."""
    rows = [f"| {param} | {_cell(change.get('old'))} | {_cell(change.get('new'))} |"
            for changes in diff.values() for param, change in sorted(changes.items())]
    if not rows:
        return "No parameter changed."
    return "\n".join([f"| param | {rev} | workspace |", "|---|---|---|", *rows])


def metrics_table(diff: dict, rev: str) -> str:
    """`dvc metrics diff --all --json` as a Markdown table with the change of every metric."""
    rows = []
    for path, metrics in diff.items():
        for metric, change in sorted(metrics.items()):
            delta = change.get("diff")
            delta_text = "-" if delta is None else (f"{delta:+.5g}" if delta else "0")
            rows.append(f"| {metric} | {_cell(change.get('old'))} | {_cell(change.get('new'))} | {delta_text} | {path} |")
    if not rows:
        return "No metrics found."
    return "\n".join([f"| metric | {rev} | workspace | change | file |", "|---|---|---|---|---|", *rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="main", help="git revision to compare the workspace with (default: main)")
    parser.add_argument("--output", type=Path, default=Path("reports/compare"))
    args = parser.parse_args(argv)
    if subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.rev}^{{commit}}"],
                      capture_output=True).returncode != 0:
        raise PipelineError(f"unknown git revision {args.rev!r}; give a branch, tag or commit with --rev")

    params_diff = params_table(json.loads(command("dvc", "params", "diff", args.rev, "--json")), args.rev)
    metrics_diff = metrics_table(json.loads(command("dvc", "metrics", "diff", args.rev, "--all", "--json")), args.rev)
    args.output.mkdir(parents=True, exist_ok=True)
    plots = draw_plots({args.rev: args.rev, "workspace": None}, args.output)

    sections = [
        f"# Model report: workspace against `{args.rev}`",
        "## Parameters changed", params_diff,
        "## Metrics", metrics_diff,
        "## Plots",
        *[f"### {title}\n\n![{title}]({name})" for title, name in plots],
    ]
    for image in IMAGES:
        if Path(image).exists():
            name = image.replace("reports/", "").replace("/", "_")
            shutil.copyfile(image, args.output / name)
            sections.append(f"### {Path(image).stem.replace('_', ' ').capitalize()} ({image})\n\n![{image}]({name})")
    write_text(args.output / "report.md", "\n\n".join(sections) + "\n")
    print(f"report: {args.output / 'report.md'} compares the workspace with {args.rev}")


if __name__ == "__main__":
    run_stage(main)
