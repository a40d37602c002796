"""dvc.yaml declares, for each stage, the project code that `python -m stages.<name>` runs.

DVC re-runs a stage only when a declared dependency changes, so a module missing from the list
would let a stale result survive, and an extra folder would re-run work for nothing. Code is
declared by folder of digitlab/ (digitlab/__init__.py maps them); a file that holds nothing but
a docstring cannot change what a stage does, so it needs no declaring.
"""

import ast
import re

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

PACKAGES = ("stages", "digitlab")
PIPELINE = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def source_file(module: str) -> str:
    """stages.train -> stages/train.py; digitlab.shared -> digitlab/shared/__init__.py."""
    path = module.replace(".", "/")
    return f"{path}/__init__.py" if (PROJECT_ROOT / path).is_dir() else f"{path}.py"


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
    """The files of `module`, its packages and every project module it imports, directly or through another."""
    found, pending = set(), project_modules([module])
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        for node in ast.walk(ast.parse((PROJECT_ROOT / source_file(name)).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                # `from digitlab import figures` may name a module: keep those that are files or packages.
                submodules = [f"{node.module}.{alias.name}" for alias in node.names]
                pending.extend(project_modules([node.module]))
                pending.extend(m for m in project_modules(submodules)
                               if m.count(".") and (PROJECT_ROOT / source_file(m)).exists())
            elif isinstance(node, ast.Import):
                pending.extend(project_modules([alias.name for alias in node.names]))
    return {source_file(name) for name in found}


def holds_code(path: str) -> bool:
    """False for a file of nothing but a docstring (digitlab/__init__.py, say)."""
    body = ast.parse((PROJECT_ROOT / path).read_text()).body
    return not all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def stage_module(stage: str) -> str:
    return re.fullmatch(r"python -m (stages\.\w+) .*", PIPELINE[stage]["cmd"]).group(1)


def declared_code(stage: str) -> set[str]:
    return {dep for dep in PIPELINE[stage]["deps"] if dep.split("/")[0] in PACKAGES}


def covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("stage", PIPELINE)
def test_every_file_a_stage_runs_is_declared(stage):
    run = {path for path in code_run_by(stage_module(stage)) if holds_code(path)}
    missing = {path for path in run if not any(covers(dep, path) for dep in declared_code(stage))}
    assert not missing, f"{stage} runs {sorted(missing)} but dvc.yaml does not list them"


@pytest.mark.parametrize("stage", PIPELINE)
def test_a_stage_declares_no_code_it_does_not_run(stage):
    run = code_run_by(stage_module(stage))
    unused = {dep for dep in declared_code(stage) if not any(covers(dep, path) for path in run)}
    assert not unused, f"{stage} lists {sorted(unused)} in dvc.yaml but never imports them"


@pytest.mark.parametrize("stage", PIPELINE)
def test_each_stage_depends_on_its_module_and_folders_of_digitlab(stage):
    declared = declared_code(stage)
    assert {"stages/__init__.py", source_file(stage_module(stage))} <= declared
    for dep in declared - {"stages/__init__.py", source_file(stage_module(stage))}:
        assert re.fullmatch(r"digitlab/\w+", dep) and (PROJECT_ROOT / dep).is_dir(), f"{stage}: {dep} is not a folder"


def stages_depending_on(folder: str) -> set[str]:
    return {stage for stage in PIPELINE if folder in declared_code(stage)}


def test_code_that_uses_the_model_reruns_no_stage():
    # The command, the app and how they prepare images: an edit there changes no result of the pipeline.
    assert not stages_depending_on("digitlab/serving") and not stages_depending_on("digitlab/review")
    assert all(not path.startswith(("digitlab/serving/", "digitlab/review/"))
               for stage in PIPELINE for path in code_run_by(stage_module(stage)))


def test_evaluation_code_reruns_only_evaluate_and_sample_predict():
    assert stages_depending_on("digitlab/evaluation") == {"evaluate", "sample_predict"}


def test_only_train_depends_on_the_training_code_and_train_not_on_the_raw_files_code():
    # An edit to how raw files are read must not retrain the model (minutes).
    assert stages_depending_on("digitlab/training") == {"train"}
    assert "digitlab/data" not in declared_code("train")


def test_bytecode_is_not_hashed_with_the_code():
    # Python writes __pycache__/ inside the folders dvc.yaml lists: hashed, it would differ on every machine.
    assert "__pycache__/" in (PROJECT_ROOT / ".dvcignore").read_text().splitlines()
