"""dvc.yaml declares, for each stage, exactly the project code that `python -m stages.<name>` runs.

DVC re-runs a stage only when a declared dependency changes, so a file missing from the list would let a stale
result survive, and an extra one would re-run work for nothing (a comment in the download code must not retrain
the model). `.ci/stage_deps.py` computes the lists from the imports (grimp); these tests check that dvc.yaml
agrees, that the check fails when it does not, and, in a scratch copy, that `dvc status` re-runs exactly the
stages that import an edited file.
"""

import functools
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, ci_script, python_in

PIPELINE = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
stage_deps = ci_script("stage_deps")
PACKAGES = stage_deps.PACKAGES
GRAPH = stage_deps.import_graph()


@functools.cache
def code_run_by(module: str) -> frozenset[str]:
    return frozenset(stage_deps.code_of(module, GRAPH))


def declared_code(stage: str) -> set[str]:
    return {dep for dep in PIPELINE[stage]["deps"] if dep.split("/")[0] in PACKAGES}


def files_in(folder: str) -> set[str]:
    return {str(file.relative_to(PROJECT_ROOT)) for file in (PROJECT_ROOT / folder).rglob("*.py")}


def stage_module(stage: str) -> str:
    return stage_deps.stage_module(PIPELINE[stage]["cmd"])


def stages_running(path: str) -> set[str]:
    return {stage for stage in PIPELINE if path in code_run_by(stage_module(stage))}


@pytest.mark.parametrize("stage", PIPELINE)
def test_dvc_yaml_declares_exactly_the_files_a_stage_runs(stage):
    assert declared_code(stage) == code_run_by(stage_module(stage))


def test_the_check_passes_here_and_fails_after_an_import_dvc_yaml_does_not_list(tmp_path):
    def stage_deps_in_copy(*options):
        return python_in(tmp_path, str(PROJECT_ROOT / ".ci" / "stage_deps.py"), "--root", str(tmp_path), *options)

    for name in ("stages", "digitlab"):
        shutil.copytree(PROJECT_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    assert stage_deps_in_copy("--check").returncode == 0

    # A new import in a library file that train runs, and that fetch does not.
    fitting = tmp_path / "digitlab" / "training" / "fitting.py"
    fitting.write_text(fitting.read_text() + "\nfrom digitlab.images import mnist_look  # a new import\n")
    failed = stage_deps_in_copy("--check")
    assert failed.returncode == 1 and "train" in failed.stderr and "fetch" not in failed.stderr, failed.stderr

    # Without --check it rewrites the deps, and keeps dvc.yaml's comments.
    assert stage_deps_in_copy().returncode == 0
    rewritten = (tmp_path / "dvc.yaml").read_text()
    assert "digitlab/images/mnist_look.py" in yaml.safe_load(rewritten)["stages"]["train"]["deps"]
    assert rewritten.splitlines()[0] == (PROJECT_ROOT / "dvc.yaml").read_text().splitlines()[0]
    assert stage_deps_in_copy("--check").returncode == 0


def test_fetch_runs_only_the_download_code_and_what_every_stage_shares():
    assert code_run_by("stages.fetch") == {"stages/__init__.py", "stages/fetch.py"} | files_in("digitlab/shared")


def test_code_that_uses_the_model_or_compares_versions_reruns_no_stage():
    # The command, the app, the report and the search: an edit there changes no result of the pipeline.
    assert not any(
        path.startswith(("digitlab/serving/", "digitlab/review/", "digitlab/search/", "digitlab/comparison/"))
        for stage in PIPELINE
        for path in code_run_by(stage_module(stage))
    )


def test_only_train_runs_the_training_code_and_train_not_the_raw_files_code():
    # An edit to how raw files are read must not retrain the model (minutes), nor one to the training
    # code re-run the stages before it.
    assert {frozenset(stages_running(path)) for path in files_in("digitlab/training")} == {frozenset({"train"})}
    assert not stages_running("digitlab/raw/splits.py") & {"train", "evaluate", "sample_predict"}


def test_bytecode_is_not_hashed_with_the_code():
    # Python writes __pycache__/ inside the code folders: hashed, it would differ on every machine.
    assert "__pycache__/" in (PROJECT_ROOT / ".dvcignore").read_text().splitlines()


# Run in a scratch copy by a separate Python: edits each file in turn and prints, as JSON, the stages
# `dvc status` then lists, by file.
EDIT_EACH_FILE = """
import json, sys
from pathlib import Path
from dvc.repo import Repo

repo = Repo(".")
assert repo.status() == {}, repo.status()
rerun = {}
for name in sys.argv[1:]:
    path = Path(name)
    original = path.read_bytes()
    path.write_bytes(original + b"# an edit\\n")
    rerun[name] = sorted(repo.status())
    path.write_bytes(original)
assert repo.status() == {}, repo.status()
print(json.dumps(rerun))
"""


@pytest.mark.slow
def test_dvc_status_after_an_edit_lists_exactly_the_stages_that_import_the_file(tmp_path):
    # A copy of the project's files as they are (committed or not), its data and model stand-ins, and a
    # dvc.lock that `dvc commit` writes for them: then only the edits below can change `dvc status`.
    project = tmp_path / "project"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (PROJECT_ROOT / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, project / name)
    for name in (
        "data/raw/files",
        "data/model/model.keras",
        "data/model/model.onnx",
        *(
            f"data/prepared/{split}.npz"
            for split in (
                "train",
                "val",
                "test",
                "nondigits_train",
                "nondigits_val",
                "nondigits_test",
                "user_digits_val",
                "user_digits_test",
            )
        ),
    ):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("a stand-in")

    def run(*command):
        return subprocess.run(command, cwd=project, capture_output=True, text=True, check=True)

    run("git", "init", "-q")
    run("dvc", "commit", "--force", "--quiet")

    code = sorted(name for name in files if name.startswith(PACKAGES) and name.endswith(".py"))
    rerun = json.loads(run(sys.executable, "-c", EDIT_EACH_FILE, *code).stdout)
    wrong = {
        name: f"dvc status lists {stages}, the imports say {sorted(stages_running(name))}"
        for name, stages in rerun.items()
        if set(stages) != stages_running(name)
    }
    assert not wrong, wrong
    assert rerun["digitlab/images/mnist_look.py"] == ["preprocess"]  # not fetch: it downloads nothing
    assert rerun["digitlab/serving/reader.py"] == []
