"""The GitHub workflow that posts the pull-request report: valid for GitHub, and running only what this project has.

GitHub runs it on a pull request only, after a full `dvc repro`; these checks catch a typo in it in seconds.
"""

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from tests.conftest import PROJECT_ROOT

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "report.yaml"


def run_scripts() -> list[str]:
    """The shell script of every `run:` step of every job."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def test_workflow_matches_githubs_schema():
    # check-jsonschema ships a copy of the published schema, so this needs no network.
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        check=False, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_python_module_it_runs_exists():
    modules = [module for script in run_scripts() for module in re.findall(r"\bpython3? -m ([\w.]+)", script)]
    assert "digitlab.review.report" in modules
    our_packages = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for module in modules:
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:  # its package is missing too
            spec = None
        assert spec is not None, f"the workflow runs `python -m {module}`, which does not exist"
        if module.split(".")[0] in our_packages:
            # This project's copy, not some other one installed.
            assert Path(spec.origin).is_relative_to(PROJECT_ROOT), f"{module} comes from {spec.origin}"


def test_it_installs_this_project_from_the_lock():
    installs = [line for script in run_scripts() for line in script.splitlines() if re.search(r"\buv sync\b", line)]
    assert installs, "the workflow does not install the project with `uv sync`"
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    for line in installs:
        # --frozen: exactly the versions of the committed uv.lock, the ones that made the committed metrics.
        assert "--frozen" in line.split(), f"`{line.strip()}` may install versions other than uv.lock's"
        for extra in re.findall(r"--extra[= ](\S+)", line):
            assert extra in pyproject["project"]["optional-dependencies"], f"`{line.strip()}`: no extra {extra}"
