"""dvc.yaml declares, for each stage, exactly the stages/ modules that its code imports.

DVC re-runs a stage only when a declared dependency changes, so a module missing from
the list would let a stale result survive, and an extra one would re-run work for nothing.
"""

import ast
import re

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

STAGES_DIR = PROJECT_ROOT / "stages"
PIPELINE = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def imported_modules(module: str) -> set[str]:
    """`module` and every stages/ module it imports, directly or through another."""
    found, pending = set(), [module]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        tree = ast.parse((STAGES_DIR / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "stages":  # from stages import figures
                pending.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
                pending.append(node.module.removeprefix("stages."))
            elif isinstance(node, ast.Import):  # import stages.figures
                pending.extend(alias.name.removeprefix("stages.") for alias in node.names
                               if alias.name.startswith("stages."))
    return found


@pytest.mark.parametrize("stage", PIPELINE)
def test_stage_declares_the_code_it_runs(stage):
    module = re.fullmatch(r"python -m stages\.(\w+) .*", PIPELINE[stage]["cmd"]).group(1)
    declared = {dep for dep in PIPELINE[stage]["deps"] if dep.startswith("stages/")}
    assert declared == {f"stages/{name}.py" for name in imported_modules(module)}
