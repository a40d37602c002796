"""dvc.yaml declares, for each stage, exactly the project code that `python -m stages.<name>` runs.

DVC re-runs a stage only when a declared dependency changes, so a file missing from the list would
let a stale result survive, and an extra one would re-run work for nothing (a comment in the
download code must not retrain the model). A stage's code is its module, stages/__init__.py and every
file of digitlab/ it imports, directly or not, each package's __init__.py included; dvc.yaml lists a
folder where the stage imports every file in it. The last test edits each file in a scratch copy of
the project and asks `dvc status` which stages would re-run.
"""

import ast
import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

PACKAGES = ("stages", "digitlab")
PIPELINE = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def source_file(module: str) -> str | None:
    """stages.train -> stages/train.py; digitlab.shared -> digitlab/shared/__init__.py; None for digitlab
    itself, a namespace package (no file), or a name that is not a module (`from x import function`)."""
    path = module.replace(".", "/")
    for candidate in (f"{path}/__init__.py", f"{path}.py"):
        if (PROJECT_ROOT / candidate).is_file():
            return candidate
    return None


def project_modules(names: list[str]) -> list[str]:
    """The names that are modules of this project, with their packages: digitlab.data.raw -> digitlab,
    digitlab.data, digitlab.data.raw."""
    found = []
    for name in names:
        parts = name.split(".")
        if parts[0] in PACKAGES:
            found.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def code_run_by(module: str) -> set[str]:
    """The files of `module`, its packages and every project module it imports, directly or through
    another (imports inside functions included), as paths from the project root."""
    found, pending = set(), project_modules([module])
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        if source_file(name) is None:
            continue
        for node in ast.walk(ast.parse((PROJECT_ROOT / source_file(name)).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                # `from digitlab import figures` names a module: keep the names that are files or packages.
                pending.extend(project_modules([node.module]))
                pending.extend(m for m in project_modules([f"{node.module}.{alias.name}" for alias in node.names])
                               if source_file(m))
            elif isinstance(node, ast.Import):
                pending.extend(project_modules([alias.name for alias in node.names]))
    return {path for path in map(source_file, found) if path}


def declared_code(stage: str) -> set[str]:
    return {dep for dep in PIPELINE[stage]["deps"] if dep.split("/")[0] in PACKAGES}


def files_in(dep: str) -> set[str]:
    """The files DVC hashes for a dependency: the file, or every file in the folder but bytecode."""
    path = PROJECT_ROOT / dep
    if path.is_file():
        return {dep}
    return {str(file.relative_to(PROJECT_ROOT)) for file in path.rglob("*")
            if file.is_file() and "__pycache__" not in file.parts}


def stage_module(stage: str) -> str:
    return re.fullmatch(r"python -m (stages\.\w+) .*", PIPELINE[stage]["cmd"]).group(1)


def hashed_code(stage: str) -> set[str]:
    return set().union(*(files_in(dep) for dep in declared_code(stage)))


@pytest.mark.parametrize("stage", PIPELINE)
def test_every_file_a_stage_runs_is_declared(stage):
    missing = code_run_by(stage_module(stage)) - hashed_code(stage)
    assert not missing, f"{stage} runs {sorted(missing)} but dvc.yaml does not list them"


@pytest.mark.parametrize("stage", PIPELINE)
def test_a_stage_declares_no_file_it_does_not_run(stage):
    unused = hashed_code(stage) - code_run_by(stage_module(stage))
    assert not unused, f"{stage} would re-run for {sorted(unused)}, which it never imports"


def stages_running(path: str) -> set[str]:
    return {stage for stage in PIPELINE if path in code_run_by(stage_module(stage))}


def test_fetch_runs_only_the_download_code_and_what_every_stage_shares():
    assert code_run_by("stages.fetch") == {"stages/__init__.py", "stages/fetch.py"} | files_in("digitlab/shared")


def test_code_that_uses_the_model_reruns_no_stage():
    # The command, the app and the report: an edit there changes no result of the pipeline.
    assert not any(path.startswith(("digitlab/serving/", "digitlab/review/"))
                   for stage in PIPELINE for path in code_run_by(stage_module(stage)))


def test_only_train_runs_the_training_code_and_train_not_the_raw_files_code():
    # An edit to how raw files are read must not retrain the model (minutes), nor one to the training
    # code re-run the stages before it.
    assert {stages for path in files_in("digitlab/training") for stages in [frozenset(stages_running(path))]} \
        == {frozenset({"train"})}
    assert not stages_running("digitlab/data/raw.py") & {"train", "evaluate", "sample_predict"}


def test_bytecode_is_not_hashed_with_the_code():
    # Python writes __pycache__/ inside the folders dvc.yaml lists: hashed, it would differ on every machine.
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
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (PROJECT_ROOT / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, project / name)
    for name in ("data/raw/files", "data/model/model.keras", "data/model/model.onnx",
                 *(f"data/prepared/{split}.npz" for split in ("train", "val", "test", "nondigits_train",
                                                              "nondigits_val", "nondigits_test",
                                                              "user_digits_val", "user_digits_test"))):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("a stand-in")
    run = lambda *command: subprocess.run(command, cwd=project, capture_output=True, text=True, check=True)  # noqa: E731
    run("git", "init", "-q")
    run("dvc", "commit", "--force", "--quiet")

    code = sorted(name for name in files if name.startswith(PACKAGES) and name.endswith(".py"))
    rerun = json.loads(run(sys.executable, "-c", EDIT_EACH_FILE, *code).stdout)
    wrong = {name: f"dvc status lists {stages}, the imports say {sorted(stages_running(name))}"
             for name, stages in rerun.items() if set(stages) != stages_running(name)}
    assert not wrong, wrong
    assert rerun["digitlab/images/reading.py"] == ["preprocess"]  # not fetch: it downloads nothing
    assert rerun["digitlab/serving/reader.py"] == []
