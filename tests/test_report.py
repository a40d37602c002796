"""The pull-request report, `python -m digitlab.review.report`, in a tiny git + DVC repository: no training, seconds.

Each test commits metrics files shaped like the pipeline's as the baseline, changes the workspace,
runs the report against HEAD as CI does against the base branch, and reads the report.md it writes.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from digitlab.evaluation.answers import fingerprint, to_json
from digitlab.files.arrays import save_arrays
from tests.conftest import PROJECT_ROOT

# The tools of the environment running the tests (`dvc` sits beside this Python), and the project's code.
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
}

# The metrics files of the real dvc.yaml, with the same keys: 6 test and 4 "not a digit" metrics of
# evaluate, 4 train metrics and 2 of "not a digit" on validation.
TEST_METRICS = {
    "test": {
        "accuracy": 0.9957,
        "errors": 43,
        "loss": 0.014714,
        "macro_f1": 0.995689,
        "ece": 0.001628,
        "accepted_accuracy": 0.99671,
    },
    "reject": {"threshold": 0.4997, "auroc": 0.999515, "nondigits": 0.969828, "digits": 0.0019},
}
TRAIN_METRICS = {
    "model": {"params": 83994},
    "eval": {"accuracy": 0.994666, "loss": 0.022},
    "step": 11,
    "reject": {"val_nondigits": 0.969697, "val_digits": 0.0018},
}
METRIC_COUNT = 6 + 4 + 4 + 2
# No stage needs to name these: `dvc params diff` compares the whole of params.yaml.
PARAMS = {"seed": 42, "train": {"epochs": 12, "learning_rate": 0.003}}


def run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def report(repo: Path, rev: str = "HEAD", *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "digitlab.review.report", "--rev", rev, "--output", "compare", *options],
        cwd=repo,
        env=ENV,
        capture_output=True,
        text=True,
    )


def report_md(repo: Path) -> str:
    result = report(repo)
    assert result.returncode == 0, result.stderr
    return (repo / "compare" / "report.md").read_text()


def cells(row: str) -> list[str]:
    """A Markdown table row's cells, whatever padding DVC gives them."""
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def section(report: str, heading: str) -> str:
    """The text under `## heading`, up to the next heading of that level."""
    return report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0].strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git + DVC repository whose HEAD holds params.yaml and the three metrics files."""
    repo = tmp_path / "repo"
    repo.mkdir()
    # The project's own dvc.yaml: the review finds the files it reads there (digitlab/review/outputs.py).
    shutil.copy2(PROJECT_ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    write_json(repo / "reports/evaluate/metrics.json", TEST_METRICS)
    write_json(repo / "reports/train/metrics.json", TRAIN_METRICS)
    for command in (
        ["git", "init", "-q"],
        ["git", "config", "user.name", "test"],
        ["git", "config", "user.email", "test@example.com"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "baseline"],
    ):
        run(command, repo)
    return repo


def test_unchanged_workspace_gives_the_headline_table_and_says_nothing_changed(repo):
    report = report_md(repo)

    assert [line for line in report.splitlines() if line.startswith("#")] == [
        "# Model report: workspace against `HEAD`",
        "## Is it real?",
        "## Test set",
        "## Parameters changed",
        "## Metrics changed",
        "## Plots",
    ]
    # The only table is the headline one: no per-class rows, no dvclive `step`.
    assert [line for line in report.splitlines() if line.startswith("|")] == [
        "| metric | HEAD | workspace | change |",
        "|---|---|---|---|",
        "| test.accuracy | 0.9957 | 0.9957 | 0 |",
        "| test.errors | 43 | 43 | 0 |",
        "| test.loss | 0.014714 | 0.014714 | 0 |",
        "| test.macro_f1 | 0.99569 | 0.99569 | 0 |",
        "| test.ece | 0.001628 | 0.001628 | 0 |",
        "| reject.nondigits | 0.96983 | 0.96983 | 0 |",
        "| reject.digits | 0.0019 | 0.0019 | 0 |",
        "| eval.accuracy | 0.99467 | 0.99467 | 0 |",
    ]
    assert section(report, "Parameters changed") == "No parameter changed."
    assert section(report, "Metrics changed") == f"No metric changed ({METRIC_COUNT} unchanged)."
    # None of the plot data exists here: the report skips those plots rather than failing.
    assert "![" not in report


def test_changes_show_in_the_headline_and_in_dvcs_own_tables(repo):
    changed = copy.deepcopy(TEST_METRICS)
    changed["test"]["accuracy"] = 0.9962
    changed["test"]["top2_accuracy"] = 0.9995  # a new metric: changed too, though DVC gives it no difference
    write_json(repo / "reports/evaluate/metrics.json", changed)
    trained = copy.deepcopy(TRAIN_METRICS)
    trained["eval"]["loss"] = 0.0201
    write_json(repo / "reports/train/metrics.json", trained)
    (repo / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "train": {**PARAMS["train"], "epochs": 20}}))

    report = report_md(repo)

    headline = section(report, "Test set")
    assert "| test.accuracy | 0.9957 | 0.9962 | +0.0005 |" in headline
    assert "| test.errors | 43 | 43 | 0 |" in headline
    assert "top2" not in headline
    params = [cells(line) for line in section(report, "Parameters changed").splitlines() if line.startswith("|")]
    assert params[0] == ["Path", "Param", "HEAD", "workspace"]  # DVC's `--md` header, not a table of our own
    assert params[2:] == [["params.yaml", "train.epochs", "12", "20"]]

    metrics = section(report, "Metrics changed")
    # Of the METRIC_COUNT baseline metrics 2 changed and the rest did not; the new one counts as changed.
    assert metrics.startswith(f"<details><summary>3 metrics changed, {METRIC_COUNT - 2} unchanged</summary>\n\n|")
    inside = metrics.split("</summary>", 1)[1].split("</details>", 1)[0]
    header, _, *rows = [cells(line) for line in inside.splitlines() if line.startswith("|")]
    assert header[:4] == ["Path", "Metric", "HEAD", "workspace"]
    assert sorted(row[1] for row in rows) == ["eval.loss", "test.accuracy", "test.top2_accuracy"]  # changed only
    assert ["reports/train/metrics.json", "eval.loss", "0.022", "0.0201"] in [row[:4] for row in rows]
    # Rows outside the headline appear in the folded DVC table only.
    assert "eval.loss" not in report.split("<details>", 1)[0] + report.split("</details>", 1)[1]


def test_unknown_revision_is_one_line_error(repo):
    result = report(repo, rev="no-such-branch")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown git revision or experiment 'no-such-branch'; give a branch, tag, commit or an experiment "
        "named in `dvc exp show`"
    ]
    assert not (repo / "compare").exists()


def test_the_files_it_reads_are_where_dvc_yaml_says(repo):
    # evaluate's metrics moved, in dvc.yaml and on disk: the headline follows them.
    dvc_yaml = repo / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("reports/evaluate/metrics.json", "reports/scores/metrics.json"))
    (repo / "reports/scores").mkdir()
    (repo / "reports/evaluate/metrics.json").rename(repo / "reports/scores/metrics.json")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "evaluate's metrics elsewhere"], repo)
    assert "| test.accuracy | 0.9957 | 0.9957 | 0 |" in report_md(repo)

    # A file dvc.yaml no longer declares is a one-line error that names it.
    dvc_yaml.write_text(dvc_yaml.read_text().replace("reports/scores/metrics.json:", "reports/scores/scores.json:"))
    result = report(repo)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: dvc.yaml: stage evaluate has no out named metrics.json; the review reads it from there"
    ]


def test_plots_compare_the_revision_with_the_workspace(repo):
    # Plot data shaped like the pipeline's, committed as the baseline and kept in the workspace.
    for split in ("train", "eval"):
        for metric in ("accuracy", "loss"):
            rows = "".join(f"{step}\t{0.9 + step / 100}\n" for step in range(3))
            path = repo / f"reports/train/plots/metrics/{split}/{metric}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"step\t{metric}\n{rows}")
    write_json(
        repo / "reports/evaluate/per_class.json",
        [{"digit": str(digit), "f1": 0.99 - digit / 1000} for digit in range(10)],
    )
    write_json(
        repo / "reports/evaluate/calibration.json",
        [{"confidence": 0.55, "accuracy": 0.5}, {"confidence": 0.95, "accuracy": 0.97}],
    )
    write_json(
        repo / "reports/evaluate/plots/sklearn/confusion_matrix.json",
        [{"actual": str(digit), "predicted": str(digit)} for digit in range(10)] + [{"actual": "4", "predicted": "9"}],
    )
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "plot data"], repo)

    report = report_md(repo)

    images = [
        line.split("](")[1].rstrip(")") for line in section(report, "Plots").splitlines() if line.startswith("![")
    ]
    assert images == ["accuracy.png", "loss.png", "per_class_f1.png", "reliability.png", "confusion.png"]
    assert all((repo / "compare" / image).read_bytes().startswith(b"\x89PNG") for image in images)


# --- Is it real? Answers paired image by image (digitlab/review/paired.py) --------------------------------------

DIGITS, NONDIGITS = 100, 20


def prepare_images(repo: Path) -> dict[str, str]:
    """Stand-in test images in the workspace's data/prepared, as preprocess writes them; their fingerprints."""
    rng = np.random.default_rng(0)
    digits = rng.random((DIGITS, 28, 28, 1), dtype=np.float32)
    nondigits = rng.random((NONDIGITS, 28, 28, 1), dtype=np.float32)
    save_arrays(repo / "data/prepared/test.npz", images=digits, labels=np.full(DIGITS, 7))
    save_arrays(repo / "data/prepared/nondigits_test.npz", images=nondigits, kinds=np.array(["letters"] * NONDIGITS))
    return {"digits": fingerprint(digits), "nondigits": fingerprint(nondigits)}


def write_answers(repo: Path, prints: dict[str, str], misread=(), refused=(), accepted=()) -> None:
    """reports/evaluate/answers.json: test digits (all 7s) misread as 1 or refused, non-digits accepted as 4."""
    wrong = [
        {"index": i, "label": 7, "answer": 1 if i in misread else 7, "confidence": 0.61, "refused": i in refused}
        for i in sorted(set(misread) | set(refused))
    ]
    path = repo / "reports/evaluate/answers.json"
    path.write_text(
        to_json(
            {
                "threshold": 0.5,
                "views": 1,
                "digits": {"count": DIGITS, "fingerprint": prints["digits"], "wrong": wrong},
                "nondigits": {
                    "count": NONDIGITS,
                    "fingerprint": prints["nondigits"],
                    "wrong": [{"index": i, "kind": "letters", "answer": 4, "confidence": 0.9} for i in accepted],
                },
            }
        )
    )


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def verdicts(repo: Path) -> dict:
    return json.loads((repo / "compare" / "verdict.json").read_text())


def test_a_change_that_breaks_twelve_images_and_fixes_one_is_worse(repo):
    prints = prepare_images(repo)
    write_answers(repo, prints, misread=[0, 1], refused=[1], accepted=[3])
    commit(repo, "base answers")
    # The head fixes image 0 and breaks 2..13; it refuses one more digit and accepts one more non-digit.
    write_answers(repo, prints, misread=[1, *range(2, 14)], refused=[1, 50], accepted=[3, 4])

    report = report_md(repo)

    real = section(report, "Is it real?")
    assert "α = 0.05" in real
    rows = {cells(line)[0]: cells(line) for line in real.splitlines() if line.startswith("| ")}
    assert rows["metric"][1:4] == ["HEAD", "workspace", "change"]
    # p = 2 * (C(13,0) + C(13,1)) / 2**13 = 0.0034
    assert rows["test.accuracy"][-4:] == ["1", "12", "0.0034", "**worse** (these two models)"]
    assert rows["test.errors"][-4:] == ["1", "12", "0.0034", "**worse** (these two models)"]
    assert rows["reject.digits"][-4:] == ["0", "1", "1", "**noise**"]
    assert rows["reject.nondigits"][-4:] == ["0", "1", "1", "**noise**"]
    for picture in ("fixed.png", "broken.png", "refusals.png"):
        assert f"]({picture})" in real and (repo / "compare" / picture).read_bytes().startswith(b"\x89PNG")
    assert "### Fixed: 1 test digit misread by HEAD, read right by workspace" in real
    assert "### Broken: 12 test digits read right by HEAD, misread by workspace" in real

    verdict = verdicts(repo)
    assert (verdict["alpha"], verdict["base"], verdict["head"]) == (0.05, ["HEAD"], ["workspace"])
    accuracy = verdict["metrics"]["test.accuracy"]
    assert (accuracy["verdict"], accuracy["fixed"], accuracy["broken"], accuracy["images"]) == ("worse", 1, 12, DIGITS)
    assert accuracy["p_value"] == pytest.approx(28 / 2**13, rel=1e-3)
    assert accuracy["change"] == pytest.approx(-0.11)
    assert accuracy["change_low"] < -0.11 < accuracy["change_high"] < 0
    assert set(verdict["metrics"]) == {"test.accuracy", "test.errors", "reject.nondigits", "reject.digits"}


def test_fail_on_gates_one_run_per_side_only_against_a_noise_floor_given(repo):
    prints = prepare_images(repo)
    write_answers(repo, prints, misread=[0])
    commit(repo, "base answers")
    write_answers(repo, prints, misread=range(1, 13), refused=[50])

    # One run per side: these two models differ (p = 0.0034), but seed noise was not measured: no gate.
    ungated = report(repo, "HEAD", "--fail-on", "test.accuracy")
    assert ungated.returncode == 0, ungated.stderr
    assert "not gating on it" in ungated.stderr and "one run per side and no noise floor given" in ungated.stderr
    accuracy = verdicts(repo)["metrics"]["test.accuracy"]
    assert (accuracy["verdict"], accuracy["question"], accuracy["gates"]) == ("worse", "models", False)
    assert (accuracy["dispersion_measured"], accuracy["dispersion_df"]) == (False, 0)
    assert "seed noise was not measured" in section(report_md(repo), "Is it real?")

    # A floor measured earlier, as a review with several runs per side writes it: now it gates.
    write_json(
        repo / "floor.json",
        {
            "metrics": {
                name: {"dispersion": 1.0, "dispersion_df": 8, "dispersion_runs": 10}
                for name in ("test.accuracy", "test.errors", "reject.nondigits", "reject.digits")
            }
        },
    )
    worse = report(repo, "HEAD", "--fail-on", "test.accuracy", "--dispersion", "floor.json")
    assert worse.returncode == 3, worse.stderr
    # z = 11 / sqrt(13), referred to Student's t with 8 df: p = 0.016.
    assert "test.accuracy (p = 0.016)" in worse.stderr.strip().splitlines()[-1]
    accuracy = verdicts(repo)["metrics"]["test.accuracy"]  # written before it exits
    assert (accuracy["verdict"], accuracy["question"], accuracy["gates"]) == ("worse", "retraining", True)
    assert accuracy["p_holm"] == accuracy["p_value"] and verdicts(repo)["dispersion_from"] == "floor.json"
    # test.errors is the same test as test.accuracy: gating on both is one test, not two.
    both = report(repo, "HEAD", "--fail-on", "test.accuracy", "--fail-on", "test.errors", "--dispersion", "floor.json")
    assert both.returncode == 3 and "test.accuracy (p = 0.016)" in both.stderr
    # Two distinct metrics are corrected together (Holm): the smaller p doubled.
    two = report(repo, "HEAD", "--fail-on", "test.accuracy", "--fail-on", "reject.digits", "--dispersion", "floor.json")
    assert two.returncode == 3 and "Holm-adjusted" in two.stderr
    assert verdicts(repo)["metrics"]["test.accuracy"]["p_holm"] == pytest.approx(2 * accuracy["p_value"], rel=1e-3)
    noise = report(repo, "HEAD", "--fail-on", "reject.digits", "--dispersion", "floor.json")
    assert noise.returncode == 0, noise.stderr
    # A stricter level turns the same change into noise.
    assert (
        report(repo, "HEAD", "--fail-on", "test.accuracy", "--alpha", "0.001", "--dispersion", "floor.json").returncode
        == 0
    )
    # A file without a measured floor is refused, with what to give instead.
    write_json(
        repo / "single.json",
        {"metrics": {"test.accuracy": {"dispersion": 1.0, "dispersion_df": 0, "dispersion_runs": 0}}},
    )
    refused = report(repo, "HEAD", "--dispersion", "single.json")
    assert refused.returncode == 1 and "measured no noise floor" in refused.stderr.strip().splitlines()[-1]
    (repo / "broken.json").write_text("{not json")
    malformed = report(repo, "HEAD", "--dispersion", "broken.json")
    assert malformed.returncode == 1
    assert (
        "--dispersion broken.json: not a verdict.json with a noise floor" in malformed.stderr.strip().splitlines()[-1]
    )


def test_without_answers_on_one_side_there_is_no_verdict_and_no_gate(repo):
    prints = prepare_images(repo)
    write_answers(repo, prints, misread=[0])  # the workspace has answers, HEAD (the base) none

    assert "No paired test: `HEAD` has no reports/evaluate/answers.json" in section(report_md(repo), "Is it real?")
    assert verdicts(repo)["metrics"] == {}
    gated = report(repo, "HEAD", "--fail-on", "test.accuracy")
    assert gated.returncode == 1
    assert (
        gated.stderr.strip().splitlines()[-1].startswith("error: --fail-on test.accuracy: no verdict, because `HEAD`")
    )


def test_several_runs_per_side_are_paired_seed_by_seed_pooled_and_held_to_the_noise_floor(repo):
    prints = prepare_images(repo)
    # Two seeds on each side, committed on branches; each head run fixes 6 images and breaks 1 against the
    # base run of its own seed. The base's two seeds differ by 10 images fixed and 20 broken between them.
    for seed, misread in ((42, range(0, 10)), (43, range(20, 40))):
        run(["git", "checkout", "-qb", f"base-{seed}", "master" if seed == 42 else "base-42"], repo)
        (repo / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "seed": seed}))
        write_answers(repo, prints, misread=misread)
        commit(repo, f"base, seed {seed}")
        run(["git", "checkout", "-qb", f"head-{seed}"], repo)
        write_answers(repo, prints, misread=[*list(misread)[6:], 99])
        commit(repo, f"head, seed {seed}")

    # Given in another order on the head side: paired by seed all the same.
    result = report(repo, "base-42", "--rev", "base-42", "base-43", "--head", "head-43", "head-42")
    assert result.returncode == 0, result.stderr
    verdict = verdicts(repo)
    assert verdict["pairs"] == [
        {"base": "base-42", "head": "head-42", "seeds": [42, 42]},
        {"base": "base-43", "head": "head-43", "seeds": [43, 43]},
    ]
    accuracy = verdict["metrics"]["test.accuracy"]
    assert (accuracy["fixed"], accuracy["broken"], accuracy["pairs"]) == (12, 2, 2)
    # Summed, 12 fixed against 2 would be "better" (p = 0.013); but each side's two seeds differ by 10 images
    # (z**2 = 3.33 and 5.56 times what independent images give): 5 images a run is noise (Student's t, 2 df).
    assert accuracy["dispersion"] == pytest.approx(50 / 12, abs=1e-3)
    assert accuracy["dispersion_df"] == pytest.approx(2) and accuracy["dispersion_runs"] == 4
    assert (accuracy["verdict"], accuracy["question"], accuracy["gates"]) == ("noise", "retraining", True)
    assert accuracy["p_value"] > 0.5
    report_text = (repo / "compare" / "report.md").read_text()
    assert "Runs paired by seed: 42 (`base-42` and `head-42`), 43 (`base-43` and `head-43`)." in report_text
    assert "base-42 … (2 runs)" in report_text
    assert "Verdicts about retraining" in report_text and "Noise floor from both sides' 2 runs each" in report_text

    # One pair alone: no noise floor (and 6 against 1 is noise anyway, p = 0.125).
    assert report(repo, "base-42", "--head", "head-42").returncode == 0
    single = verdicts(repo)["metrics"]["test.accuracy"]
    assert (single["dispersion_measured"], single["fixed"], single["broken"], single["verdict"]) == (
        False,
        6,
        1,
        "noise",
    )
    uneven = report(repo, "base-42", "--head", "head-42", "head-43")
    assert uneven.returncode == 1 and "1 runs on the base side and 2 on the head side" in uneven.stderr


def test_a_run_given_twice_or_answers_of_other_images_anywhere_are_refused(repo):
    prints = prepare_images(repo)
    for seed in (42, 43, 44):
        run(["git", "checkout", "-qb", f"base-{seed}", "master"], repo)
        (repo / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "seed": seed}))
        # Seed 44's runs answered other test images, both of them: each pair alone would match.
        write_answers(repo, prints if seed != 44 else {**prints, "digits": "other"}, misread=[seed % 10])
        commit(repo, f"base, seed {seed}")
        run(["git", "checkout", "-qb", f"head-{seed}"], repo)
        write_answers(repo, prints if seed != 44 else {**prints, "digits": "other"}, misread=[1 + seed % 10])
        commit(repo, f"head, seed {seed}")

    # The same run three times would triple the counts as if they were three seeds.
    twice = report(repo, "base-42", "--rev", "base-42", "base-43", "base-42", "--head", "head-42", "head-43", "head-44")
    assert twice.returncode == 1 and "--rev gives one run twice ('base-42' and 'base-42')" in twice.stderr
    head_twice = report(repo, "base-42", "--rev", "base-42", "base-43", "--head", "head-43", "head-43")
    assert head_twice.returncode == 1 and "--head gives one run twice" in head_twice.stderr
    seed_again = report(repo, "base-42", "--rev", "base-42", "head-42", "--head", "head-43", "base-43")
    assert seed_again.returncode == 1 and "--rev gives 2 runs of seed 42 ('base-42', 'head-42')" in seed_again.stderr
    assert not (repo / "compare").exists()  # refused before any file is written

    other = report(repo, "base-42", "--rev", "base-42", "base-44", "--head", "head-42", "head-44")
    assert other.returncode == 0, other.stderr
    assert verdicts(repo)["unpaired"].startswith("`base-42` and `base-44` cannot be paired: the test digits differ")
