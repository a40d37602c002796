"""Pull-request report: is a change real? Compare the workspace (or any runs) with a git revision.

Writes OUTPUT_DIR/report.md for the reviewer and OUTPUT_DIR/verdict.json for CI, the head side (default: the
workspace) against the base side (default: main): "Is it real?" (each test image paired across the versions,
the images fixed and broken, and the paired test's verdict, digitlab/review/paired.py), the test set's
headline scores, `dvc params diff`, `dvc metrics diff` and the plots, drawn locally. Several runs per side
(`--rev a b c --head x y z`, a seed each) are paired seed by seed. It reads git and the workspace only;
docs/review.md has the rest.

Usage: python -m digitlab.review.report [--rev main ...] [--head workspace ...] [--alpha 0.05]
                                        [--fail-on test.accuracy ...] [--dispersion VERDICT_JSON]
                                        [--output reports/compare]
Exits 3 when a metric named by --fail-on is "worse" after Holm's correction and its verdict is about retraining
(several runs per side, or --dispersion); after writing both files.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from digitlab.shared.errors import UserError, run_command

import numpy as np

from digitlab.comparison.revisions import WORKSPACE, Run, check_distinct, pair_by_seed, resolve
from digitlab.comparison.significance import format_p, holm
from digitlab.evaluation.answers import fingerprint
from digitlab.files.arrays import load_arrays
from digitlab.files.atomic import write_json, write_text
from digitlab.inference.rounding import CONFIDENCE_DECIMALS
from digitlab.review import paired
from digitlab.review.outputs import read_by, written_by
from digitlab.review.plots import draw_changes, draw_plots

# The pipeline's files, by the stage that writes (or reads) them; their paths are dvc.yaml's (review/outputs.py).
ANSWERS = ("evaluate", "answers.json")
TEST_IMAGES = {"digits": "test.npz", "nondigits": "nondigits_test.npz"}  # evaluate's dependencies
IMAGES = (("evaluate", "mistakes.png"), ("sample_predict", "samples.png"))
EVALUATE = ("evaluate", "metrics.json")
EXIT_WORSE = 3
# The rows of the report's headline table, in this order: (stage, metrics file, metric) as `dvc metrics diff`
# names the metric.
HEADLINE = (
    (*EVALUATE, "test.accuracy"),
    (*EVALUATE, "test.errors"),
    (*EVALUATE, "test.loss"),
    (*EVALUATE, "test.macro_f1"),
    (*EVALUATE, "test.ece"),
    (*EVALUATE, "reject.nondigits"),  # "not a digit": test non-digits refused...
    (*EVALUATE, "reject.digits"),  # ... and test digits refused
    (*EVALUATE, "robust.mean_accuracy"),  # under MNIST-C's 15 corruptions
    ("train", "metrics.json", "eval.accuracy"),  # on the validation images, the only non-test row
)


def command(*args: str) -> str:
    """Run a command (never through a shell) and return its output; fail with its message."""
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"`{' '.join(args)}` failed: {last_line}")
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
    for stage, file, name in HEADLINE:
        path = written_by(stage, file)
        base_values = [metric_value(run, path, name) for run in base]
        head_values = [metric_value(run, path, name) for run in head]
        if any(value is not None for value in base_values + head_values):
            rows.append(
                f"| {name} | {_cell(base_values)} | {_cell(head_values)} | {_change(base_values, head_values)} |"
            )
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


def read_floor(path: Path) -> dict[str, paired.NoiseFloor]:
    """The noise floor per metric from a verdict.json that several runs per side wrote (--dispersion)."""
    try:
        metrics = json.loads(path.read_text())["metrics"]
        floors = {
            name: paired.NoiseFloor(float(m["dispersion"]), float(m["dispersion_df"]), int(m["dispersion_runs"]))
            for name, m in metrics.items()
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"--dispersion {path}: not a verdict.json with a noise floor per metric ({error}); give "
            "the verdict.json of a review with several runs per side"
        ) from None
    if not any(floor.measured for floor in floors.values()):
        raise UserError(
            f"--dispersion {path}: its review had one run per side, so it measured no noise floor; "
            "give the verdict.json of a review with several runs per side"
        )
    return floors


def paired_tests(
    pairs: list[tuple[Run, Run]],
    alpha: float,
    floors: dict[str, paired.NoiseFloor] | None = None,
) -> tuple[list[paired.Test], list[dict], str]:
    """The paired test of each metric over all pairs of runs, the first pair's answers, and why no test was
    possible ("" if one was)."""
    runs = [run for pair in pairs for run in pair]
    answers = written_by(*ANSWERS)
    for run in runs:
        if run.read(answers) is None:
            return (
                [],
                [],
                (
                    f"`{run.name}` has no {answers}, written by evaluate since this report pairs "
                    "images; run `dvc repro` there and commit it"
                ),
            )
    first = runs[0]
    for run in runs[1:]:  # every run of both sides, not only each pair, must have answered the same images
        if why := paired.mismatch(first.read_json(answers), run.read_json(answers)):
            return [], [], f"`{first.name}` and `{run.name}` cannot be paired: {why}"
    base = [b.read_json(answers) for b, _ in pairs]
    head = [h.read_json(answers) for _, h in pairs]
    tests = [
        paired.compare(
            metric,
            paired.failure_matrix(base, metric),
            paired.failure_matrix(head, metric),
            alpha,
            (floors or {}).get(metric.name),
        )
        for metric in paired.METRICS
    ]
    return tests, [base[0], head[0]], ""


def gate(tests: list[paired.Test], fail_on: list[str]) -> tuple[dict[str, float], list[str]]:
    """Holm-adjusted p-values of the distinct tests that --fail-on names and that may gate, and a line for each
    named metric that may not (one run per side, no noise floor)."""
    verdicts = {test.metric: test for test in tests}
    named = list(dict.fromkeys(paired.BY_NAME[name].same_test_as or name for name in fail_on))
    gating = [name for name in named if verdicts[name].gates]
    skipped = [
        f"{name}: one run per side and no noise floor given (--dispersion), so its verdict is about these "
        "two trained models, not about retraining; not gating on it"
        for name in named
        if name not in gating
    ]
    adjusted = holm([verdicts[name].p_value for name in gating])
    return dict(zip(gating, adjusted)), skipped


def _answer(row: dict) -> str:
    """A wrong answer from answers.json as the pictures caption it: "7 (93%)"."""
    return f"{row['answer']} ({row['confidence']:.{max(0, CONFIDENCE_DECIMALS - 2)}%})"


def change_pictures(base: Run, head: Run, pair: tuple[dict, dict], output: Path) -> list[str]:
    """Pictures of the test images the first pair's change fixed and broke; Markdown for the report."""
    paths = {name: read_by("evaluate", file) for name, file in TEST_IMAGES.items()}
    held = {name: load_arrays(path) for name, path in paths.items() if Path(path).exists()}
    if set(held) != set(TEST_IMAGES) or any(
        fingerprint(held[name]["images"]) != pair[0][name]["fingerprint"] for name in held
    ):
        return [
            f"(No pictures: the workspace's {Path(paths['digits']).parent} is not the test set these versions "
            "answered; `dvc pull` or `dvc repro` it to see them.)"
        ]
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
        ("Broken", "broken.png", head_wrong - base_wrong, True, f"read right by {base.name}, misread by {head.name}"),
    ):
        if not indices:
            sections.append(f"### {title}: none")
            continue
        draw_changes(
            held["digits"]["images"],
            [(index, caption(index), broken) for index in sorted(indices)],
            output / file_name,
            f"{title}: {len(indices)} test digits {what}",
        )
        sections.append(
            f"### {title}: {len(indices)} test digit{'s' * (len(indices) != 1)} {what}\n\n![{title}]({file_name})"
        )

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
            changes.append((name, index, f"{what}\n{names[0]}: {said[0]}\n{names[1]}: {said[1]}", index in failed[1]))
    if changes:
        # Both kinds in one picture: the non-digits first, then the digits.
        stacked = np.concatenate([held["nondigits"]["images"], held["digits"]["images"]])
        offset = {"nondigits": 0, "digits": len(held["nondigits"]["images"])}
        draw_changes(
            stacked,
            [(offset[name] + index, caption, broken) for name, index, caption, broken in changes],
            output / "refusals.png",
            f'"Not a digit": {len(changes)} images refused by one version only',
        )
        sections.append(
            f'### "Not a digit": {len(changes)} images refused by one version only (red: the head '
            'got it wrong)\n\n!["Not a digit"](refusals.png)'
        )
    return sections


def noise_floor(tests: list[paired.Test], runs: int, given: Path | None) -> str:
    """What the verdicts promise, and the noise floor they were held to."""
    if not tests[0].dispersion_measured:
        return (
            "One run per side, so seed noise was not measured: a verdict other than noise says that these two "
            "trained models differ on these images (McNemar's exact test), not that retraining with the change "
            "would be better or worse. `--fail-on` does not gate on it; give several seeds per side, or "
            "`--dispersion` with the verdict.json of such a review (docs/review.md)."
        )
    if runs > 1:
        source = f"both sides' {runs} runs each" + (
            f" (`{given}` is not used: with several runs a side, their own runs measure it)" if given else ""
        )
    else:
        source = f"`{given}`, measured earlier"
    factors = "; ".join(
        f"{test.dispersion:g} for {test.metric} ({test.dispersion_df:g} df; as independent images, "
        f"{test.effective_fixed:.4g} fixed and {test.effective_broken:.4g} broken)"
        for test in tests
        if not test.same_test_as
    )
    return (
        f"Verdicts about retraining: would the change, trained again with other seeds, be better or worse on "
        f"average? Noise floor from {source}: runs differ from each other this many times as much as "
        f"independent images would (1: as much, 0: not at all): {factors}. The change is referred to Student's t "
        "with those degrees of freedom. test.errors is the same test as test.accuracy."
    )


def verdict_table(tests: list[paired.Test], base: list[Run], head: list[Run]) -> str:
    alpha = tests[0].alpha
    rows = [
        f"| metric | {side_name(base)} | {side_name(head)} | change | {paired.confidence_label(alpha)} interval "
        "| fixed | broken | p | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    metrics = written_by(*EVALUATE)
    for test in tests:
        rows.append(
            f"| {test.metric} | {_cell([metric_value(r, metrics, test.metric) for r in base])} "
            f"| {_cell([metric_value(r, metrics, test.metric) for r in head])} | {test.change:+.4g} "
            f"| {test.change_low:+.4g} to {test.change_high:+.4g} | {test.fixed} | {test.broken} "
            f"| {format_p(test.p_value, alpha)} | **{test.verdict}**"
            f"{' (these two models)' if test.verdict != 'noise' and not test.gates else ''} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rev",
        nargs="+",
        default=["main"],
        metavar="REV",
        help="the base side: git revisions or experiments, one per seed (default: main)",
    )
    parser.add_argument(
        "--head",
        nargs="+",
        default=[WORKSPACE],
        metavar="REV",
        help="the head side, as many as --rev (default: the workspace)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the verdicts (default: 0.05)")
    parser.add_argument(
        "--fail-on",
        action="append",
        default=[],
        choices=paired.METRIC_NAMES,
        metavar="METRIC",
        help=f"exit {EXIT_WORSE} if this metric's verdict is worse; repeatable ({', '.join(paired.METRIC_NAMES)})",
    )
    parser.add_argument(
        "--dispersion",
        type=Path,
        metavar="VERDICT_JSON",
        help="a noise floor measured earlier: the verdict.json of a review with several runs per side "
        "(of the same kind of run), so that one run per side can gate",
    )
    parser.add_argument(
        "--source", default="", help="where each side's numbers came from, a line under the title (CI says which)"
    )
    parser.add_argument("--output", type=Path, default=Path("reports/compare"))
    args = parser.parse_args(argv)
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}")
    floors = read_floor(args.dispersion) if args.dispersion else None
    base, head = [resolve(name) for name in args.rev], [resolve(name) for name in args.head]
    check_distinct(base, "--rev")
    check_distinct(head, "--head")
    pairs, pairing = pair_by_seed(base, head)

    # DVC's answers first: if `dvc` fails, the report stops before writing any file.
    changed_params, changed_metrics = params_section(base[0], head[0]), metrics_section(base[0], head[0])
    tests, first_pair, unpaired = paired_tests(pairs, args.alpha, floors)
    verdicts = {test.metric: test for test in tests}
    for name in args.fail_on:
        if name not in verdicts:
            raise UserError(f"--fail-on {name}: no verdict, because {unpaired}")
    adjusted, not_gating = gate(tests, args.fail_on) if tests else ({}, [])
    args.output.mkdir(parents=True, exist_ok=True)

    title = f"# Model report: {side_name(head)} against `{side_name(base)}`"
    real = [
        f"Each test image is paired across the two versions. Fixed: wrong before, right after; broken: the "
        f"other way. The paired test at α = {args.alpha:g} asks whether fixed and broken differ by more "
        "than chance would make them (docs/review.md says how to read it)."
    ]
    if pairing:
        real.append(pairing)
    if tests:
        real.append(verdict_table(tests, base, head))
        real.append(noise_floor(tests, len(base), args.dispersion))
        if len(adjusted) > 1:
            real.append(
                f"`--fail-on` gates on {len(adjusted)} tests together, so their p-values are corrected by "
                "Holm's method: "
                + ", ".join(f"{name} p = {format_p(p, args.alpha)}" for name, p in adjusted.items())
                + "."
            )
        real += change_pictures(pairs[0][0], pairs[0][1], first_pair, args.output)
    else:
        real.append(f"No paired test: {unpaired}.")
    sections = [
        title,
        *([args.source] if args.source else []),
        "## Is it real?",
        *real,
        "## Test set",
        headline_table(base, head),
        "## Parameters changed",
        changed_params,
        "## Metrics changed",
        changed_metrics,
    ]

    plots = draw_plots({base[0].name: base[0], head[0].name: head[0]}, args.output)
    sections += ["## Plots", *[f"### {title}\n\n![{title}]({name})" for title, name in plots]]
    if head[0].commit is None:
        for image in (written_by(*stage_and_file) for stage_and_file in IMAGES):
            if Path(image).exists():
                name = image.replace("reports/", "").replace("/", "_")
                shutil.copyfile(image, args.output / name)
                sections.append(
                    f"### {Path(image).stem.replace('_', ' ').capitalize()} ({image})\n\n![{image}]({name})"
                )
    write_text(args.output / "report.md", "\n\n".join(sections) + "\n")
    metrics = {
        t.metric: {
            **{k: v for k, v in t.as_json().items() if k not in ("metric", "alpha")},
            **({"p_holm": float(f"{adjusted[t.metric]:.4g}")} if t.metric in adjusted else {}),
        }
        for t in tests
    }
    write_json(
        args.output / "verdict.json",
        {
            "alpha": args.alpha,
            "base": [run.name for run in base],
            "head": [run.name for run in head],
            "pairs": [{"base": b.name, "head": h.name, "seeds": [b.seed, h.seed]} for b, h in pairs],
            **({"dispersion_from": str(args.dispersion)} if args.dispersion else {}),
            **({"metrics": metrics} if tests else {"metrics": {}, "unpaired": unpaired}),
        },
    )
    print(f"report: {args.output / 'report.md'} compares {side_name(head)} with {side_name(base)}")
    for test in tests:
        about = "" if test.gates else "these two models, "
        print(
            f"report: {test.metric} {test.verdict} ({about}p = {format_p(test.p_value, args.alpha)}; "
            f"{test.fixed} fixed, {test.broken} broken)"
        )

    for line in not_gating:
        print(f"report: --fail-on {line}", file=sys.stderr)
    worse = [name for name, p in adjusted.items() if p < args.alpha and verdicts[name].verdict == "worse"]
    if worse:
        print(
            f"report: worse than {side_name(base)}: "
            + ", ".join(
                f"{name} (p = {format_p(adjusted[name], args.alpha)}"
                + (", Holm-adjusted" if len(adjusted) > 1 else "")
                + ")"
                for name in worse
            )
            + "; failing as --fail-on asks",
            file=sys.stderr,
        )
        sys.exit(EXIT_WORSE)


if __name__ == "__main__":
    run_command(main)
