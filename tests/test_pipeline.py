"""End to end: the real `dvc repro` and `dvc exp run` in a temporary git repository, on small data.

The small pipeline (`pipeline`, built once per session) and the copy a test may change (`clone`) come
from tests/e2e.py, which the end-to-end tests of sharing and the model registry use too.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from digitlab.evaluation.corruptions import CORRUPTIONS
from digitlab.images.nondigits import LOOKS
from tests.e2e import QUICK, experiment_metrics, run, set_params, stages_run

pytestmark = pytest.mark.slow


def test_every_stage_writes_outputs_that_make_sense(pipeline):
    stats = json.loads((pipeline / "reports/explore/stats.json").read_text())
    assert stats["train"]["images"] == 60000 and stats["test"]["images"] == 10000
    assert sum(stats["train"]["per_class"].values()) == 60000
    for figure in ("examples", "samples", "distribution"):
        assert (pipeline / f"reports/explore/{figure}.png").read_bytes().startswith(b"\x89PNG")

    with np.load(pipeline / "data/prepared/train.npz", allow_pickle=False) as train:
        assert train["images"].shape[1:] == (28, 28, 1) and train["images"].dtype == np.float32
        train_count = len(train["labels"])
    with np.load(pipeline / "data/prepared/val.npz", allow_pickle=False) as val:
        val_count = len(val["labels"])
    # Rounding per class may move the totals by a few images.
    assert abs(train_count + val_count - 3000) <= 10 and abs(val_count - 300) <= 10

    train_metrics = json.loads((pipeline / "reports/train/metrics.json").read_text())
    assert f"{train_metrics['model']['params']:,}" in (pipeline / "reports/train/model_summary.txt").read_text()
    for split in ("train", "eval"):
        for metric in ("accuracy", "loss"):
            rows = (pipeline / f"reports/train/plots/metrics/{split}/{metric}.tsv").read_text().splitlines()
            assert len(rows) == 1 + QUICK["train.epochs"]
    assert (pipeline / "data/model/model.keras").stat().st_size > 0
    assert (pipeline / "data/model/model.onnx").stat().st_size > 0

    # "Not a digit", on validation: all non-digits, those drawn by unseen hands, digits, digits as users send them.
    assert list(train_metrics["reject"]) == ["val_nondigits", "val_drawn_nondigits", "val_digits", "val_user_digits"]
    all_metrics = json.loads((pipeline / "reports/evaluate/metrics.json").read_text())
    assert list(all_metrics) == ["test", "reject", "robust"]
    # "Not a digit": the non-digits preprocess made, and the share of each set the model's threshold refuses.
    for split, count in (("train", round(0.05 * train_count)), ("val", 140), ("test", 140)):
        with np.load(pipeline / f"data/prepared/nondigits_{split}.npz", allow_pickle=False) as nondigits:
            assert count - 5 <= len(nondigits["kinds"]) <= count and nondigits["images"].shape[1:] == (28, 28, 1)
            nondigits_kinds = nondigits["kinds"]  # the last, the test split's
    reject = all_metrics["reject"]
    # As many test digits in users' hands and looks as test non-digits, and the share of them refused.
    with np.load(pipeline / "data/prepared/user_digits_test.npz", allow_pickle=False) as users:
        assert 130 <= len(users["labels"]) <= 140 and set(users["looks"]) == set(LOOKS)
    assert 0 <= reject["user_digits"] <= 1
    assert 0 < reject["threshold"] < 1 and 0.5 < reject["auroc"] <= 1
    assert 0 <= reject["digits"] <= 0.05 and 0 <= reject["nondigits"] <= 1
    roc = json.loads((pipeline / "reports/evaluate/plots/sklearn/roc.json").read_text())["roc"]
    assert roc[0]["fpr"] == roc[0]["tpr"] == 0 and roc[-1]["fpr"] == roc[-1]["tpr"] == 1
    test_metrics = all_metrics["test"]
    # Batch normalisation on, as by default: 3,000 images and 2 epochs (90 steps) read most test digits right.
    assert 0.9 < test_metrics["accuracy"] <= 1 and test_metrics["loss"] > 0
    assert test_metrics["errors"] == round((1 - test_metrics["accuracy"]) * 10000)
    confusion = json.loads((pipeline / "reports/evaluate/plots/sklearn/confusion_matrix.json").read_text())
    assert len(confusion) == 10000 and set(confusion[0]) == {"actual", "predicted"}
    assert [row["digit"] for row in json.loads((pipeline / "reports/evaluate/per_class.json").read_text())] == [
        str(d) for d in range(10)
    ]
    # Robustness: MNIST-C's 15 corruptions of the first 300 test images, each scored, and their mean and worst.
    corruptions = json.loads((pipeline / "reports/evaluate/corruptions.json").read_text())
    assert [row["corruption"] for row in corruptions] == list(CORRUPTIONS)
    accuracies = [row["accuracy"] for row in corruptions]
    assert all(0 <= accuracy <= 1 and abs(accuracy * 300 - round(accuracy * 300)) < 1e-3 for accuracy in accuracies)
    robust = all_metrics["robust"]
    assert robust["worst_accuracy"] == min(accuracies) < robust["mean_accuracy"] < test_metrics["accuracy"]
    assert robust["mean_accuracy"] == pytest.approx(np.mean(accuracies), abs=1e-6)
    # Image by image, the answers the review pairs: they add up to the metrics, and stay small.
    answers = json.loads((pipeline / "reports/evaluate/answers.json").read_text())
    digits, nondigits = answers["digits"], answers["nondigits"]
    assert digits["count"] == 10000 and nondigits["count"] == len(nondigits_kinds)
    assert sum(row["answer"] != row["label"] for row in digits["wrong"]) == test_metrics["errors"]
    assert sum(row["refused"] for row in digits["wrong"]) == round(reject["digits"] * 10000)
    assert len(nondigits["wrong"]) == round((1 - reject["nondigits"]) * nondigits["count"])
    assert all(row["confidence"] < reject["threshold"] + 0.01 for row in digits["wrong"] if row["refused"])
    assert (pipeline / "reports/evaluate/answers.json").stat().st_size < 50_000

    with open(pipeline / "reports/predict/predictions.csv") as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == QUICK["sample_predict.count"]
    assert all(
        0 <= float(row["confidence"]) <= 1 and row["correct"] == str(int(row["true"] == row["predicted"]))
        for row in rows
    )


def test_second_repro_runs_nothing(clone):
    output = run(["dvc", "repro"], clone)
    assert stages_run(output) == [] and "up to date" in output


def test_changing_a_sample_predict_param_reruns_only_sample_predict(clone):
    set_params(clone / "params.yaml", {"sample_predict.count": 4})
    assert stages_run(run(["dvc", "repro"], clone)) == ["sample_predict"]


def test_test_time_augmentation_reruns_evaluate_and_sample_predict_and_changes_the_probabilities(clone):
    before = json.loads((clone / "reports/evaluate/metrics.json").read_text())["test"]
    predictions = (clone / "reports/predict/predictions.csv").read_text()
    views = yaml.safe_load((clone / "params.yaml").read_text())["evaluate"]["tta_views"]
    set_params(clone / "params.yaml", {"evaluate.tta_views": 1 if views != 1 else 5})
    assert stages_run(run(["dvc", "repro"], clone)) == ["evaluate", "sample_predict"]
    after = json.loads((clone / "reports/evaluate/metrics.json").read_text())["test"]
    assert after["loss"] != before["loss"]  # another mean over views, or the plain prediction
    assert (clone / "reports/predict/predictions.csv").read_text() != predictions


def test_a_forced_rerun_changes_no_tracked_file_but_the_timings(clone):
    models = [clone / "data/model/model.keras", clone / "data/model/model.onnx"]
    before = [model.read_bytes() for model in models]
    assert stages_run(run(["dvc", "repro", "--force"], clone)) == [
        "fetch",
        "explore",
        "preprocess",
        "train",
        "evaluate",
        "sample_predict",
    ]
    # Every metric, plot, figure and table as committed; the timings and their hashes in dvc.lock alone differ.
    changed = run(["git", "status", "--porcelain"], clone).splitlines()
    assert sorted(line[3:] for line in changed) == [
        "dvc.lock",
        "reports/evaluate/speed.json",
        "reports/train/speed.json",
    ], changed

    def without_timings(lock: str) -> dict:
        stages = yaml.safe_load(lock)["stages"]
        for stage in stages.values():
            stage["outs"] = [out for out in stage.get("outs", []) if not out["path"].endswith("speed.json")]
        return stages

    lock = (clone / "dvc.lock").read_text()
    assert without_timings(lock) == without_timings(run(["git", "show", "HEAD:dvc.lock"], clone))
    # No save date, no memory addresses, no tf2onnx counters: the model files hold the weights alone.
    assert [model.read_bytes() for model in models] == before
    assert stages_run(run(["dvc", "repro"], clone)) == []


def test_failed_stage_leaves_no_partial_file_and_checkout_brings_the_outputs_back(clone):
    model = (clone / "data/model/model.keras").read_bytes()
    lock = (clone / "dvc.lock").read_text()
    set_params(clone / "params.yaml", {"train.learning_rate": 0})  # invalid: train stops before it starts
    output = run(["dvc", "repro"], clone, check=False)
    assert "error: invalid params.yaml: train.learning_rate" in output and "failed to reproduce 'train'" in output
    # DVC removed train's outputs before running it; nothing half-written was left instead.
    assert not (clone / "data/model/model.keras").exists() and not (clone / "reports/train/metrics.json").exists()
    assert not [p for p in clone.rglob(".*partial*")] and (clone / "dvc.lock").read_text() == lock

    run(["git", "checkout", "params.yaml", "reports/"], clone)
    run(["dvc", "checkout"], clone)
    assert (clone / "data/model/model.keras").read_bytes() == model
    assert json.loads(run(["dvc", "status", "--json"], clone)) == {}


def test_a_stage_error_is_one_line_and_exits_non_zero(pipeline, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "data/prepared", str(tmp_path / "absent.onnx"), str(tmp_path)],
        check=False,
        cwd=pipeline,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: model file")
    assert "Traceback" not in result.stderr


def _plot_ids(root: Path) -> list[str]:
    """The ids of the top-level plots of dvc.yaml: a plot's title, or an image's path."""
    plots = yaml.safe_load((root / "dvc.yaml").read_text())["plots"]
    return [next(iter(plot)) if isinstance(plot, dict) else plot for plot in plots]


def exp_show_headers(clone: Path, *options: str) -> list[str]:
    """The column headers of `dvc exp show` as a 120-column terminal shows them (a cut one ends in '…')."""
    table = run(["dvc", "exp", "show", "--no-pager", *options], clone, env={"COLUMNS": "120"})
    return table.splitlines()[1].split()


def test_experiments_compare_in_exp_show_metrics_diff_plots_diff_and_the_report(
    experimented, experiment_clone, tmp_path
):
    # One test for the whole review loop. Each `dvc exp run` that trains is the suite's dearest step, so
    # the experiment "one" (`dvc exp run --temp -S train.epochs=1`) is made once, by tests/e2e.py.
    clone = experiment_clone
    baseline = json.loads((clone / "reports/evaluate/metrics.json").read_text())["test"]
    # As the README runs them: with --temp each leaves the workspace as it was, so the next starts from
    # params.yaml, not from the one before. train.epochs re-runs exactly train, evaluate and sample_predict.
    ran = experimented[1]
    assert stages_run(ran) == ["train", "evaluate", "sample_predict"], ran
    assert run(["git", "status", "--porcelain"], clone) == ""
    # A queued experiment runs from a clean copy of the workspace: -S train.epochs=2 is the baseline's own
    # value, so all its results come from the cache and nothing trains.
    run(["dvc", "exp", "run", "--queue", "-S", "train.epochs=2", "-n", "two"], clone)
    # And another seed of the baseline's params, which trains: what seed noise looks like.
    run(["dvc", "exp", "run", "--queue", "-S", "seed=43", "-n", "seed43"], clone)
    run(["dvc", "exp", "run", "--run-all"], clone)
    experiments = experiment_metrics(json.loads(run(["dvc", "exp", "show", "--json"], clone)))
    assert experiments.get("one") is not None and experiments["one"] != baseline, experiments
    assert experiments["two"] == baseline and experiments["seed43"] != baseline

    # Is it real? Pairing each test image across two experiments: a second seed is noise; 2 epochs
    # against 1 are better, and 1 against 2 worse (experiments by name, as `dvc exp show` lists them).
    def verdict(*options: str) -> dict:
        output = tmp_path / "verdict"
        run([sys.executable, "-m", "digitlab.review.report", *options, "--output", str(output)], clone)
        return json.loads((output / "verdict.json").read_text())["metrics"]

    seeds = verdict("--rev", "two", "--head", "seed43")["test.accuracy"]
    assert seeds["verdict"] == "noise" and seeds["fixed"] + seeds["broken"] > 0, seeds
    longer = verdict("--rev", "one", "--head", "two")["test.accuracy"]
    assert longer["verdict"] == "better" and longer["p_value"] < 0.01, longer
    assert verdict("--rev", "two", "--head", "one")["test.accuracy"]["verdict"] == "worse"
    # Applied to the workspace, an experiment's change from HEAD is what `dvc metrics diff` shows.
    run(["dvc", "exp", "apply", "one"], clone)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], clone))
    assert diff["reports/evaluate/metrics.json"]["test.accuracy"] == {
        "old": baseline["accuracy"],
        "new": experiments["one"]["accuracy"],
        "diff": pytest.approx(experiments["one"]["accuracy"] - baseline["accuracy"]),
    }
    # The test metrics come first, test.accuracy leading (a plain `dvc exp show` in 120 columns cuts every
    # name short, so the order is read from its CSV).
    columns = run(["dvc", "exp", "show", "--csv"], clone).splitlines()[0].split(",")
    metrics = [column for column in columns if column.startswith(("test.", "reject.", "robust.", "eval.", "model."))]
    assert metrics[:2] == ["test.accuracy", "test.errors"], columns
    # Only train.epochs differs, so `--only-changed` has one param column. Beside the changed files' hashes
    # and the queue's columns, 120 columns no longer hold its name whole (with the metrics of the model that
    # takes the paper away); dropped, as the README shows it, the table fits with names as short as these.
    headers = exp_show_headers(clone, "--only-changed", "--drop", "data/.*|State|Executor")
    assert {"Experiment", "test.accuracy", "test.errors", "test.loss", "train.epochs"} <= set(headers), headers
    # The headline columns by name, "not a digit" among them (docs/not-a-digit.md).
    headers = exp_show_headers(
        clone,
        "--drop",
        ".*",
        "--keep",
        "Experiment|test.accuracy|test.errors|reject.nondigits|reject.digits|train.epochs",
    )
    assert headers == [
        "Experiment",
        "test.accuracy",
        "test.errors",
        "reject.nondigits",
        "reject.digits",
        "train.epochs",
    ], headers
    # A reviewer reads every changed metric at a glance: the headline figures (the ten of "not a digit"
    # and the two of MNIST-C among them, 20 rows at most), no per-class scores or timings.
    rows = [line for line in run(["dvc", "metrics", "diff", "one", "two"], clone).splitlines()[1:] if line.strip()]
    assert 5 <= len(rows) <= 20, rows
    assert not [row for row in rows if "per_class" in row or "seconds" in row or "images_per_second" in row]

    # Every plot of dvc.yaml, the per-class scores among them, is compared.
    run(["dvc", "plots", "diff", "one", "two", "-o", str(tmp_path / "plots")], clone)
    html = (tmp_path / "plots" / "index.html").read_text()
    for score in ("F1", "precision", "recall"):
        assert f"Per-class {score} (test)" in html
    for plot_id in _plot_ids(clone):
        if plot_id.endswith(".png"):
            # Images are copied once per revision.
            for rev in ("one", "two"):
                assert (tmp_path / "plots" / "static" / f"{rev}_{plot_id.replace('/', '_')}").exists(), plot_id
        else:
            assert plot_id in html, plot_id

    # The report, offline: the experiment applied to the workspace against the baseline commit.
    output = tmp_path / "report"
    run([sys.executable, "-m", "digitlab.review.report", "--rev", "HEAD", "--output", str(output)], clone)
    report = (output / "report.md").read_text()
    assert json.loads((output / "verdict.json").read_text())["metrics"]["test.accuracy"]["verdict"] == "worse"
    real = report.split("## Is it real?")[1].split("\n## ")[0]
    assert "**worse**" in real and "](broken.png)" in real  # the test digits 1 epoch misreads, as pictures
    old, new = baseline["accuracy"], experiments["one"]["accuracy"]
    assert f"| test.accuracy | {old:.5g} | {new:.5g} | {new - old:+.5g} |" in report
    assert "train.epochs" in report.split("## Parameters changed")[1].split("##")[0]
    images = [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert {
        "accuracy.png",
        "loss.png",
        "per_class_f1.png",
        "reliability.png",
        "confusion.png",
        "evaluate_mistakes.png",
    } <= set(images)
    assert all((output / image).read_bytes().startswith(b"\x89PNG") for image in images)
