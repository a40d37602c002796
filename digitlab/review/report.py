"""Pull-request report: is a change real? Compare the workspace (or any runs) with a git revision, in
Markdown with PNG plots, and write the verdict as JSON for CI to gate on.

Writes OUTPUT_DIR/report.md for the reviewer and OUTPUT_DIR/verdict.json for CI, comparing the head side
(default: the workspace) with the base side (default: main):
  Is it real?          each test image paired across the versions (evaluate's answers.json): the images the
                       change fixed and broke, as pictures, and McNemar's exact test on them with a verdict,
                       better, worse or noise, for test accuracy and errors and the shares of test non-digits and
                       digits refused as "not a digit" (digitlab/review/paired.py)
  Test set             the headline scores on each side (mean and range over several runs) and their change
  Parameters changed   `dvc params diff` as DVC prints it
  Metrics changed      `dvc metrics diff` as DVC prints it (changed metrics only), folded away
  Plots                PNGs drawn locally with Matplotlib from the plot data DVC uses, plus the head's most
                       confident mistakes and sample predictions
Several runs per side (`--rev a b c --head x y z`, a seed each) are paired seed by seed. No browser, no
network: it reads git and the workspace only. The CI workflow posts report.md as a pull-request comment.

Usage: python -m digitlab.review.report [--rev main ...] [--head workspace ...] [--alpha 0.05]
                                        [--fail-on test.accuracy ...] [--output reports/compare]
Exits 3 when a metric named by --fail-on is "worse" (after writing both files).
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from digitlab.evaluation.answers import CONFIDENCE_DECIMALS, fingerprint
from digitlab.files.arrays import load_arrays
from digitlab.files.atomic import write_json, write_text
from digitlab.review import paired
from digitlab.review.plots import draw_changes, draw_plots
from digitlab.review.revisions import WORKSPACE, Run, pair_by_seed, resolve
from digitlab.shared.errors import PipelineError, run_stage

ANSWERS = "reports/evaluate/answers.json"
TEST_IMAGES = {"digits": "data/prepared/test.npz", "nondigits": "data/prepared/nondigits_test.npz"}
IMAGES = ("reports/evaluate/mistakes.png", "reports/predict/samples.png")
EVALUATE_METRICS = "reports/evaluate/metrics.json"
EXIT_WORSE = 3
# The rows of the report's headline table, in this order: (metrics file, metric) as `dvc metrics diff` names them.
HEADLINE = (
    (EVALUATE_METRICS, "test.accuracy"),
    (EVALUATE_METRICS, "test.errors"),
    (EVALUATE_METRICS, "test.loss"),
    (EVALUATE_METRICS, "test.macro_f1"),
    (EVALUATE_METRICS, "test.ece"),
    (EVALUATE_METRICS, "reject.nondigits"),  # "not a digit": test non-digits refused...
    (EVALUATE_METRICS, "reject.digits"),  # ... and test digits refused
    (EVALUATE_METRICS, "robust.mean_accuracy"),  # under MNIST-C's 15 corruptions
    ("reports/train/metrics.json", "eval.accuracy"),  # on the validation images, the only non-test row
)


def command(*args: str) -> str:
    """Run a command (never through a shell) and return its output; fail with its message."""
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise PipelineError(f"`{' '.join(args)}` failed: {last_line}")
    return result.stdout


def metric_value(run: Run, path: str, name: str):
    """One metric of a run, e.g. "test.accuracy" in reports/evaluate/metrics.json; None where absent."""
    value = run.read_json(path) or {}
    for key in name.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def side_name(runs: list[Run]) -> str:
    return runs[0].name if len(runs) == 1 else f"{runs[0].name} … ({len(runs)} runs)"


def _cell(values: list) -> str:
    """One side's value, or with several runs their mean and range."""
    values = [value for value in values if value is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.5g}" if isinstance(values[0], float) else str(values[0])
    return f"{np.mean(values):.5g} ({min(values):.5g} to {max(values):.5g})"


def _change(base: list, head: list) -> str:
    base, head = [v for v in base if v is not None], [v for v in head if v is not None]
    if not base or not head:
        return "-"
    delta = float(np.mean(head) - np.mean(base))
    return f"{delta:+.5g}" if delta else "0"


def headline_table(base: list[Run], head: list[Run]) -> str:
    """The HEADLINE metrics on each side and their change, as a Markdown table."""
    rows = []
    for path, name in HEADLINE:
        base_values = [metric_value(run, path, name) for run in base]
        head_values = [metric_value(run, path, name) for run in head]
        if any(value is not None for value in base_values + head_values):
            rows.append(f"| {name} | {_cell(base_values)} | {_cell(head_values)} | {_change(base_values, head_values)} |")
    if not rows:
        return "None of the headline metrics was found."
    return "\n".join([f"| metric | {side_name(base)} | {side_name(head)} | change |", "|---|---|---|---|", *rows])


def _table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.strip().splitlines() if line.startswith("|")]


def params_section(base: Run, head: Run) -> str:
    """`dvc params diff` as DVC prints it; DVC lists only the changed params."""
    revs = [base.name] + ([] if head.commit is None else [head.name])
    table = command("dvc", "params", "diff", *revs, "--md").strip()
    # With nothing changed, DVC still prints the header of an empty table.
    return table if len(_table_rows(table)) > 2 else "No parameter changed."


def metrics_section(base: Run, head: Run) -> str:
    """`dvc metrics diff` as DVC prints it (changed metrics only), folded under a count of changed and unchanged."""
    revs = [base.name] + ([] if head.commit is None else [head.name])
    lines = _table_rows(command("dvc", "metrics", "diff", *revs, "--all", "--md"))
    if len(lines) < 2:
        return "No metrics on either side."
    header, rule, *rows = lines

    def changed(row: str) -> bool:
        # Path | Metric | old | new | Change: a metric changed, as DVC decides, when its old and new values differ
        # (one side missing included); the change column shows what the rounded values may hide.
        old, new, change = [cell.strip() for cell in row.strip().strip("|").split("|")][2:5]
        return old != new or change not in ("0", "0.0")

    changes = [row for row in rows if changed(row)]
    unchanged = len(rows) - len(changes)
    if not changes:
        return f"No metric changed ({unchanged} unchanged)."
    table = "\n".join([header, rule, *changes])
    summary = f"{len(changes)} metric{'s' if len(changes) > 1 else ''} changed, {unchanged} unchanged"
    # GitHub renders Markdown inside <details> only with blank lines around it.
    return f"<details><summary>{summary}</summary>\n\n{table}\n\n</details>"


def paired_tests(pairs: list[tuple[Run, Run]], alpha: float) -> tuple[list[paired.Test], list[dict], str]:
    """McNemar's test on each paired metric, each pair's answers, and why no test was possible ("" if one was)."""
    answers = []
    for base, head in pairs:
        for run in (base, head):
            if run.read(ANSWERS) is None:
                return [], [], (f"`{run.name}` has no {ANSWERS}, written by evaluate since this report pairs "
                                "images; run `dvc repro` there and commit it")
        pair = (base.read_json(ANSWERS), head.read_json(ANSWERS))
        if why := paired.mismatch(*pair):
            return [], [], f"`{base.name}` and `{head.name}` cannot be paired: {why}"
        answers.append(pair)
    base_answers = [b for b, _ in answers]
    tests = [paired.mcnemar(metric, [paired.count(b, h, metric) for b, h in answers], alpha,
                            paired.dispersion(base_answers, metric))
             for metric in paired.METRICS]
    return tests, answers[0], ""


def _answer(row: dict) -> str:
    """A wrong answer from answers.json as the pictures caption it: "7 (93%)"."""
    return f"{row['answer']} ({row['confidence']:.{max(0, CONFIDENCE_DECIMALS - 2)}%})"


def change_pictures(base: Run, head: Run, pair: tuple[dict, dict], output: Path) -> list[str]:
    """Pictures of the test images the first pair's change fixed and broke; Markdown for the report."""
    held = {name: load_arrays(path) for name, path in TEST_IMAGES.items() if Path(path).exists()}
    if set(held) != set(TEST_IMAGES) or any(
            fingerprint(held[name]["images"]) != pair[0][name]["fingerprint"] for name in held):
        return ["(No pictures: the workspace's data/prepared is not the test set these versions answered; "
                "`dvc pull` or `dvc repro` it to see them.)"]
    names = [base.name[:12], head.name[:12]]

    # Test accuracy: the digits misread by one version and read right by the other.
    rows = [{row["index"]: row for row in answers["digits"]["wrong"]} for answers in pair]

    def caption(index: int) -> str:
        label = (rows[0].get(index) or rows[1].get(index))["label"]
        said = [label if index not in side else _answer(side[index]) for side in rows]
        return f"#{index}, a {label}\n{names[0]}: {said[0]}\n{names[1]}: {said[1]}"

    base_wrong, head_wrong = (paired.failures(answers, paired.ACCURACY) for answers in pair)
    sections = []
    for title, file_name, indices, broken, what in (
            ("Fixed", "fixed.png", base_wrong - head_wrong, False, f"misread by {base.name}, read right by {head.name}"),
            ("Broken", "broken.png", head_wrong - base_wrong, True, f"read right by {base.name}, misread by {head.name}")):
        if not indices:
            sections.append(f"### {title}: none")
            continue
        draw_changes(held["digits"]["images"], [(index, caption(index), broken) for index in sorted(indices)],
                     output / file_name, f"{title}: {len(indices)} test digits {what}")
        sections.append(f"### {title}: {len(indices)} test digit{'s' * (len(indices) != 1)} {what}\n\n"
                        f"![{title}]({file_name})")

    # "Not a digit": the images refused by one version and not by the other. A non-digit's failure is to be
    # accepted (captioned with its answer), a digit's to be refused.
    changes = []
    for name, metric in (("nondigits", paired.NONDIGITS_REFUSED), ("digits", paired.DIGITS_REFUSED)):
        rows = [{row["index"]: row for row in answers[name]["wrong"]} for answers in pair]
        failed = [paired.failures(answers, metric) for answers in pair]
        for index in sorted(failed[0] ^ failed[1]):
            row = rows[0].get(index) or rows[1].get(index)
            if name == "nondigits":
                what = f"non-digit #{index}, {row['kind']}"
                said = [_answer(rows[side][index]) if index in failed[side] else "refused" for side in (0, 1)]
            else:
                what = f"#{index}, a {row['label']}"
                said = ["refused" if index in failed[side] else "accepted" for side in (0, 1)]
            changes.append((name, index, f"{what}\n{names[0]}: {said[0]}\n{names[1]}: {said[1]}",
                            index in failed[1]))
    if changes:
        # Both kinds in one picture: the non-digits first, then the digits.
        stacked = np.concatenate([held["nondigits"]["images"], held["digits"]["images"]])
        offset = {"nondigits": 0, "digits": len(held["nondigits"]["images"])}
        draw_changes(stacked, [(offset[name] + index, caption, broken) for name, index, caption, broken in changes],
                     output / "refusals.png", f"\"Not a digit\": {len(changes)} images refused by one version only")
        sections.append(f"### \"Not a digit\": {len(changes)} images refused by one version only (red: the head "
                        "got it wrong)\n\n![\"Not a digit\"](refusals.png)")
    return sections


def noise_floor(tests: list[paired.Test], base_runs: int) -> str:
    if base_runs == 1:
        return ("One run on the base side, so no noise floor: the test takes each trained model as it is, and a "
                "seed's luck in a short run can make two models differ for real. Several seeds per side measure it "
                "(docs/review.md).")
    factors = ", ".join(f"{test.dispersion:g} for {test.metric}" for test in tests if test.metric != "test.errors")
    return (f"Noise floor, from the base's {base_runs} runs compared with each other: the counts were divided by "
            f"{factors} (1: the seeds differ no more than independent images would).")


def verdict_table(tests: list[paired.Test], base: list[Run], head: list[Run]) -> str:
    level = f"{1 - tests[0].alpha:.0%}"
    rows = [f"| metric | {side_name(base)} | {side_name(head)} | change | {level} interval | fixed | broken | p | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
    for test in tests:
        rows.append(
            f"| {test.metric} | {_cell([metric_value(r, EVALUATE_METRICS, test.metric) for r in base])} "
            f"| {_cell([metric_value(r, EVALUATE_METRICS, test.metric) for r in head])} | {test.change:+.4g} "
            f"| {test.change_low:+.4g} to {test.change_high:+.4g} | {test.fixed} | {test.broken} "
            f"| {test.p_value:.2g} | **{test.verdict}** |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", nargs="+", default=["main"], metavar="REV",
                        help="the base side: git revisions or experiments, one per seed (default: main)")
    parser.add_argument("--head", nargs="+", default=[WORKSPACE], metavar="REV",
                        help="the head side, as many as --rev (default: the workspace)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level of the verdicts (default: 0.05)")
    parser.add_argument("--fail-on", action="append", default=[], choices=paired.METRIC_NAMES, metavar="METRIC",
                        help=f"exit {EXIT_WORSE} if this metric's verdict is worse; repeatable "
                             f"({', '.join(paired.METRIC_NAMES)})")
    parser.add_argument("--source", default="",
                        help="where each side's numbers came from, a line under the title (CI says which)")
    parser.add_argument("--output", type=Path, default=Path("reports/compare"))
    args = parser.parse_args(argv)
    if not 0 < args.alpha < 1:
        raise PipelineError(f"--alpha must be between 0 and 1, got {args.alpha}")
    base, head = [resolve(name) for name in args.rev], [resolve(name) for name in args.head]
    pairs, pairing = pair_by_seed(base, head)

    # DVC's answers first: if `dvc` fails, the report stops before writing any file.
    changed_params, changed_metrics = params_section(base[0], head[0]), metrics_section(base[0], head[0])
    tests, first_pair, unpaired = paired_tests(pairs, args.alpha)
    args.output.mkdir(parents=True, exist_ok=True)

    title = f"# Model report: {side_name(head)} against `{side_name(base)}`"
    real = [f"Each test image is paired across the two versions. Fixed: wrong before, right after; broken: the "
            f"other way. McNemar's exact test at α = {args.alpha:g} asks whether fixed and broken differ by more "
            "than chance would make them (docs/review.md says how to read it)."]
    if pairing:
        real.append(pairing)
    if tests:
        real.append(verdict_table(tests, base, head))
        real.append(noise_floor(tests, len(base)))
        real += change_pictures(pairs[0][0], pairs[0][1], first_pair, args.output)
    else:
        real.append(f"No paired test: {unpaired}.")
    sections = [title, *([args.source] if args.source else []),
                "## Is it real?", *real,
                "## Test set", headline_table(base, head),
                "## Parameters changed", changed_params,
                "## Metrics changed", changed_metrics]

    plots = draw_plots({base[0].name: base[0], head[0].name: head[0]}, args.output)
    sections += ["## Plots", *[f"### {title}\n\n![{title}]({name})" for title, name in plots]]
    if head[0].commit is None:
        for image in IMAGES:
            if Path(image).exists():
                name = image.replace("reports/", "").replace("/", "_")
                shutil.copyfile(image, args.output / name)
                sections.append(f"### {Path(image).stem.replace('_', ' ').capitalize()} ({image})\n\n![{image}]({name})")
    write_text(args.output / "report.md", "\n\n".join(sections) + "\n")
    write_json(args.output / "verdict.json", {
        "alpha": args.alpha, "base": [run.name for run in base], "head": [run.name for run in head],
        "pairs": [{"base": b.name, "head": h.name, "seeds": [b.seed, h.seed]} for b, h in pairs],
        **({"metrics": {t.metric: {k: v for k, v in t.as_json().items() if k not in ("metric", "alpha")}
                        for t in tests}} if tests else {"metrics": {}, "unpaired": unpaired}),
    })
    print(f"report: {args.output / 'report.md'} compares {side_name(head)} with {side_name(base)}")
    for test in tests:
        print(f"report: {test.metric} {test.verdict} (p = {test.p_value:.2g}; {test.fixed} fixed, "
              f"{test.broken} broken)")

    verdicts = {test.metric: test for test in tests}
    for name in args.fail_on:
        if name not in verdicts:
            raise PipelineError(f"--fail-on {name}: no verdict, because {unpaired}")
    worse = [verdicts[name] for name in args.fail_on if verdicts[name].verdict == "worse"]
    if worse:
        print(f"report: worse than {side_name(base)}: " + ", ".join(
            f"{t.metric} (p = {t.p_value:.2g})" for t in worse) + "; failing as --fail-on asks", file=sys.stderr)
        sys.exit(EXIT_WORSE)


if __name__ == "__main__":
    run_stage(main)
