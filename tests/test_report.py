"""The pull-request report, `python -m digitlab.review.report`, in a tiny git + DVC repository: no training, seconds.

Each test commits metrics files shaped like the pipeline's as the baseline, changes the workspace,
runs the report against HEAD as CI does against the base branch, and reads the report.md it writes.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
TEST_METRICS = {"test": {"accuracy": 0.9957, "errors": 43, "loss": 0.014714, "macro_f1": 0.995689, "ece": 0.001628,
                         "accepted_accuracy": 0.99671},
                "reject": {"threshold": 0.4997, "auroc": 0.999515, "nondigits": 0.969828, "digits": 0.0019}}
TRAIN_METRICS = {"model": {"params": 83994}, "eval": {"accuracy": 0.994666, "loss": 0.022}, "step": 11,
                 "reject": {"val_nondigits": 0.969697, "val_digits": 0.0018}}
METRIC_COUNT = 6 + 4 + 4 + 2
DVC_YAML = {"metrics": ["reports/evaluate/metrics.json", "reports/train/metrics.json"]}
# No stage needs to name these: `dvc params diff` compares the whole of params.yaml.
PARAMS = {"seed": 42, "train": {"epochs": 12, "learning_rate": 0.003}}


def run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def report(repo: Path, rev: str = "HEAD") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitlab.review.report", "--rev", rev, "--output", "compare"],
                          cwd=repo, env=ENV, capture_output=True, text=True)


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
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    write_json(repo / "reports/evaluate/metrics.json", TEST_METRICS)
    write_json(repo / "reports/train/metrics.json", TRAIN_METRICS)
    for command in (["git", "init", "-q"], ["git", "config", "user.name", "test"],
                    ["git", "config", "user.email", "test@example.com"], ["dvc", "init", "-q"],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        run(command, repo)
    return repo


def test_unchanged_workspace_gives_the_headline_table_and_says_nothing_changed(repo):
    report = report_md(repo)

    assert [line for line in report.splitlines() if line.startswith("#")] == [
        "# Model report: workspace against `HEAD`", "## Test set", "## Parameters changed", "## Metrics changed",
        "## Plots"]
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
        "error: unknown git revision 'no-such-branch'; give a branch, tag or commit with --rev"]
    assert not (repo / "compare").exists()


def test_plots_compare_the_revision_with_the_workspace(repo):
    # Plot data shaped like the pipeline's, committed as the baseline and kept in the workspace.
    for split in ("train", "eval"):
        for metric in ("accuracy", "loss"):
            rows = "".join(f"{step}\t{0.9 + step / 100}\n" for step in range(3))
            path = repo / f"reports/train/plots/metrics/{split}/{metric}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"step\t{metric}\n{rows}")
    write_json(repo / "reports/evaluate/per_class.json",
               [{"digit": str(digit), "f1": 0.99 - digit / 1000} for digit in range(10)])
    write_json(repo / "reports/evaluate/calibration.json",
               [{"confidence": 0.55, "accuracy": 0.5}, {"confidence": 0.95, "accuracy": 0.97}])
    write_json(repo / "reports/evaluate/plots/sklearn/confusion_matrix.json",
               [{"actual": str(digit), "predicted": str(digit)} for digit in range(10)]
               + [{"actual": "4", "predicted": "9"}])
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "plot data"], repo)

    report = report_md(repo)

    images = [line.split("](")[1].rstrip(")") for line in section(report, "Plots").splitlines()
              if line.startswith("![")]
    assert images == ["accuracy.png", "loss.png", "per_class_f1.png", "reliability.png", "confusion.png"]
    assert all((repo / "compare" / image).read_bytes().startswith(b"\x89PNG") for image in images)
