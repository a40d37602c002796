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
    assert "digitlab.report" in modules
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


def test_it_installs_this_project():
    installed = [spec for script in run_scripts() for spec in re.findall(r"\bpip install -e (\S+)", script)]
    assert installed, "the workflow does not install the project"
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    for spec in installed:
        # A path, quoted or not, with extras or not: ".[s3]". Steps run in the checkout, the project's root.
        path, _, extras = spec.strip("'\"").partition("[")
        assert (PROJECT_ROOT / path / "pyproject.toml").is_file(), f"`pip install -e {spec}` finds no pyproject.toml"
        for extra in filter(None, extras.rstrip("]").split(",")):
            assert extra in pyproject["project"]["optional-dependencies"], f"`pip install -e {spec}`: no extra {extra}"
