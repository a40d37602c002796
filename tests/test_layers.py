"""The layers of digitlab/README.md, as pyproject.toml's import-linter contracts: they hold here, and each fails
in a scratch copy when an import crosses it."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, python_in

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return python_in(root, LINT_IMPORTS, "--no-cache")


def test_the_contracts_hold():
    result = lint_imports(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("file", "line", "contract"),
    [
        ("digitlab/files/atomic.py", "import stages.fetch", "stages import the library, never the reverse"),
        ("digitlab/serving/reader.py", "import digitlab.training.model", "serving imports neither training"),
        ("digitlab/serving/cli.py", "import tensorflow", "serving imports neither training"),
        # pydantic is the pipeline's: through params.py, the serving-only install could not start.
        ("digitlab/inference/views.py", "import digitlab.shared.params", "serving imports neither training"),
        ("stages/evaluate.py", "from digitlab.review import paired", "nothing imports review or benchmarks"),
        ("digitlab/search/study.py", "import benchmarks.benchmark", "nothing imports review or benchmarks"),
        ("digitlab/shared/mnist.py", "from digitlab.files import atomic", "each floor imports only the floors below"),
        ("digitlab/images/mnist_look.py", "from digitlab.inference import views", "each floor imports only the floors"),
    ],
)
def test_an_import_across_a_layer_breaks_its_contract(tmp_path, file, line, contract):
    for name in ("digitlab", "stages", "benchmarks"):
        shutil.copytree(PROJECT_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path)
    assert lint_imports(tmp_path).returncode == 0
    (tmp_path / file).write_text((tmp_path / file).read_text() + f"\n{line}\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    # "NAME KEPT" or "NAME BROKEN" for each contract, the names wrapped at the terminal's width.
    parts = re.split(r" (KEPT|BROKEN)\b", " ".join(result.stdout.split()))
    statuses = [status for name, status in zip(parts[0:-1:2], parts[1::2]) if contract in name]
    assert statuses == ["BROKEN"], result.stdout
