"""The GitHub workflows, the pull-request report and the tests: valid for GitHub, running only what this project has.

GitHub runs them on a push or a pull request only; these checks catch a typo in them in seconds.
"""

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, ci_script

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
REPORT, TESTS = WORKFLOWS / "report.yaml", WORKFLOWS / "tests.yaml"


def run_scripts(workflow: Path = REPORT) -> list[str]:
    """The shell script of every `run:` step of every job."""
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return [step["run"] for job in jobs.values() for step in job["steps"] if "run" in step]


def test_the_workflows_are_these_two():
    assert sorted(WORKFLOWS.iterdir()) == [REPORT, TESTS]


@pytest.mark.parametrize("workflow", [REPORT, TESTS], ids=lambda path: path.name)
def test_workflow_matches_githubs_schema(workflow):
    # check-jsonschema ships a copy of the published schema, so this needs no network.
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(workflow)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workflow", [REPORT, TESTS], ids=lambda path: path.name)
def test_every_python_module_it_runs_exists(workflow):
    modules = [module for script in run_scripts(workflow) for module in re.findall(r"\bpython3? -m ([\w.]+)", script)]
    assert modules
    our_packages = ci_script("stage_deps").PACKAGES
    for module in modules:
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:  # its package is missing too
            spec = None
        assert spec is not None, f"the workflow runs `python -m {module}`, which does not exist"
        if module.split(".")[0] in our_packages:
            # This project's copy, not some other one installed.
            assert Path(spec.origin).is_relative_to(PROJECT_ROOT), f"{module} comes from {spec.origin}"


def test_the_report_builds_both_sides_then_compares_them():
    scripts = "\n".join(run_scripts())
    assert scripts.index("-m digitlab.review.rebuild") < scripts.index("-m digitlab.review.report --rev review/base")


def test_the_tests_run_as_ci_runs_them_on_every_push_and_pull_request():
    workflow = yaml.safe_load(TESTS.read_text())
    assert set(workflow[True]) == {"push", "pull_request"}  # YAML 1.1 reads the key `on` as True
    assert run_scripts(TESTS)[-1] == "bash .ci/run"
    # The tests read MNIST from a mirror that the fetch stage filled from the official sources.
    assert workflow["jobs"]["tests"]["env"]["MNIST_MIRROR"]
    assert any('python -m stages.fetch "$MNIST_MIRROR"' in script for script in run_scripts(TESTS))


def test_it_installs_this_project_from_the_lock():
    installs = [line for script in run_scripts() for line in script.splitlines() if re.search(r"\buv sync\b", line)]
    assert installs, "the workflow does not install the project with `uv sync`"
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    for line in installs:
        # --frozen: exactly the versions of the committed uv.lock, the ones that made the committed metrics.
        assert "--frozen" in line.split(), f"`{line.strip()}` may install versions other than uv.lock's"
        for extra in re.findall(r"--extra[= ](\S+)", line):
            assert extra in pyproject["project"]["optional-dependencies"], f"`{line.strip()}`: no extra {extra}"
