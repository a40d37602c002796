"""What the end-to-end tests share: the small pipeline, built once per session, and helpers to drive it.

The root conftest.py loads this module as a plugin, so the `pipeline`, `clone`, `experimented` and
`experiment_clone` fixtures are the same objects in every test module: `pipeline` runs `dvc repro` (about
a minute) once per pytest session however many modules use it, and `experimented` one experiment on top
of it, for the tests of the review loop and of sharing an experiment. A test that changes anything works
on its own copy (`clone`, `experiment_clone`), so that every test can run alone and in any order. The
MNIST files come from MNIST_MIRROR, ../shared/data/mnist beside the project, or the project's own data/raw.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from digitlab.shared.params import with_overrides

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, mnist_mirror

MIRROR = mnist_mirror()
QUICK = {
    "data.max_train_samples": 3000,
    "train.epochs": 2,
    # The default cosine schedule: its learning rate ends near 0, so seeds differ less than at a constant
    # one (errors over seeds 42-45: 357-402, against 257-374), and a second seed is noise to the review.
    "train.lr_schedule": "cosine",
    "evaluate.tta_views": 1,  # a fifth of the predictions (a test switches to 5)
    "evaluate.corruption_images": 300,  # MNIST-C's 15 corruptions of 300 test images, not 10,000
    "explore.sample_count": 9,
    "sample_predict.count": 9,
    "reject.val_nondigits": 140,  # a tenth of the non-digits: preprocess makes them in a second, not seven
    "reject.test_nondigits": 140,
    "reject.val_user_digits": 140,
    "reject.test_user_digits": 140,
}


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The commands' environment: this process's, the MNIST files, and `env` (credentials, say) added."""
    # `dvc` and the `python` of dvc.yaml's commands: those beside this Python, even in a venv not activated.
    return {
        **os.environ,
        "MNIST_MIRROR": str(MIRROR),
        "DVC_NO_ANALYTICS": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **(env or {}),
    }


def run(command: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run a command as a user would; with check=False, return stdout and stderr together, unchecked."""
    result = subprocess.run(command, check=False, cwd=cwd, env=environment(env), capture_output=True, text=True)
    if check:
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + (result.stderr if not check else "")


def set_params(path: Path, changes: dict) -> None:
    path.write_text(yaml.safe_dump(with_overrides(yaml.safe_load(path.read_text()), changes), sort_keys=False))


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def experiment_metrics(show: list) -> dict[str, dict]:
    """{name: test metrics} of the baseline and its experiments, from `dvc exp show --json`."""
    found = {}
    for baseline in show:
        entries = [baseline] + [rev for exp in baseline.get("experiments") or [] for rev in exp["revs"]]
        for entry in entries:
            metrics = (entry.get("data") or {}).get("metrics") or {}
            found[entry.get("name") or entry["rev"]] = (
                metrics.get("reports/evaluate/metrics.json", {}).get("data", {}).get("test")
            )
    return found


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Path:
    """The project's files (as git sees them) in a new git repository, with quick params, after `dvc repro`
    and a commit of its results: the baseline. Tests must not change it; `clone` gives a copy to change."""
    if MIRROR is None:
        pytest.skip("no MNIST files: run `dvc repro fetch`, or set MNIST_MIRROR to a folder holding the four .gz files")
    root = tmp_path_factory.mktemp("pipeline")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if source.is_file() and not name.startswith(("data/", "reports/")) and name != "dvc.lock":
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    set_params(root / "params.yaml", QUICK)
    for command in (
        ["git", "init", "-q"],
        ["git", "config", "user.name", "test"],
        ["git", "config", "user.email", "test@example.com"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "quick params"],
    ):
        run(command, root)
    run(["dvc", "repro"], root)
    # As a user would: commit the lock file and the reports kept in git, the baseline to compare with.
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "baseline results"], root)
    return root


@pytest.fixture
def clone(pipeline, tmp_path) -> Path:
    """A copy of the baseline repository (git, DVC cache, workspace) for one test to change."""
    copy = tmp_path / "clone"
    shutil.copytree(pipeline, copy, symlinks=True)
    return copy


@pytest.fixture(scope="session")
def experimented(pipeline, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the baseline, with a DVC remote (a folder) in a commit of its own, after one experiment
    run as the README runs them, and that command's output: `dvc exp run --temp -n one -S train.epochs=1`
    (it trains: one training shared by the tests that need an experiment). Tests must not change it;
    `experiment_clone` gives a copy to change."""
    root = tmp_path_factory.mktemp("experimented") / "repo"
    shutil.copytree(pipeline, root, symlinks=True)
    # A team's DVC remote, committed before the experiment, as tests/test_sharing.py pushes it there.
    run(["dvc", "remote", "add", "--default", "storage", str(root.parent / "storage")], root)
    run(["git", "add", ".dvc/config"], root)
    run(["git", "commit", "-qm", "DVC remote"], root)
    output = run(["dvc", "exp", "run", "--temp", "-S", "train.epochs=1", "-n", "one"], root)
    return root, output


@pytest.fixture
def experiment_clone(experimented, tmp_path) -> Path:
    """A copy of `experimented` (git, its experiment, DVC cache, workspace) for one test to change."""
    copy = tmp_path / "clone"
    shutil.copytree(experimented[0], copy, symlinks=True)
    return copy
