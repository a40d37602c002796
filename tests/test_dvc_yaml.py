"""dvc.yaml declares, for each stage, exactly the project code that `python -m stages.<name>` runs.

DVC re-runs a stage only when a declared dependency changes, so a module missing from
the list would let a stale result survive, and an extra one would re-run work for nothing.
"""

import ast
import re

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

PACKAGES = ("stages", "digitlab")
PIPELINE = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def source_file(module: str) -> str:
    """stages.train -> stages/train.py; digitlab -> digitlab/__init__.py."""
    path = module.replace(".", "/")
    return f"{path}/__init__.py" if (PROJECT_ROOT / path).is_dir() else f"{path}.py"


def project_modules(names: list[str]) -> list[str]:
    """The names that are modules of this project, with their packages: digitlab.raw -> digitlab, digitlab.raw."""
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
                # `from digitlab import figures` may name a module: keep those that are files.
                submodules = [f"{node.module}.{alias.name}" for alias in node.names]
                pending.extend(project_modules([node.module]))
                pending.extend(m for m in project_modules(submodules)
                               if m.count(".") and (PROJECT_ROOT / source_file(m)).exists())
            elif isinstance(node, ast.Import):
                pending.extend(project_modules([alias.name for alias in node.names]))
    return {source_file(name) for name in found}


@pytest.mark.parametrize("stage", PIPELINE)
def test_stage_declares_the_code_it_runs(stage):
    module = re.fullmatch(r"python -m (stages\.\w+) .*", PIPELINE[stage]["cmd"]).group(1)
    declared = {dep for dep in PIPELINE[stage]["deps"] if dep.split("/")[0] in PACKAGES}
    assert declared == code_run_by(module)


def test_train_does_not_depend_on_the_raw_files_code():
    # An edit to how raw files are read must not retrain the model (8-12 minutes).
    assert not {"digitlab/raw.py", "digitlab/idx.py"} & code_run_by("stages.train")
