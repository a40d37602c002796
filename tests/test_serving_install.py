"""The serving-only install, made as a user makes it (`uv sync --frozen --no-default-groups --no-editable`, into a
new environment): it holds no TensorFlow, Keras, DVC or Matplotlib, and its mnist-predict and mnist-app read digits
with the train stage's ONNX model (docs/using-the-model.md). Its wheel holds digitlab/serving/ and the modules that
imports, file by file (pyproject.toml's list, checked against grimp's imports), nothing else."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile

import httpx
from PIL import Image

from digitlab.raw.splits import load_split
from tests.conftest import PROJECT_ROOT, ci_script, free_port, mnist_mirror

stage_deps = ci_script("stage_deps")


def serving_code() -> set[str]:
    """The files digitlab/serving/'s modules run, as grimp finds them: the modules and what they import."""
    graph = stage_deps.import_graph()
    modules = {"digitlab.serving"} | graph.find_descendants("digitlab.serving")
    return {file for module in modules for file in stage_deps.code_of(module, graph)}


SERVING_CODE = serving_code()
SERVING_FILES = SERVING_CODE | {
    str(page.relative_to(PROJECT_ROOT)) for page in (PROJECT_ROOT / "digitlab/serving/static").iterdir()
}


def test_the_wheels_file_list_is_what_serving_imports():
    listed = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]
    listed = listed["wheel"]["only-include"]
    assert "digitlab/serving" in listed
    assert set(listed) - {"digitlab/serving"} == {f for f in SERVING_CODE if not f.startswith("digitlab/serving/")}


def test_the_serving_only_install_reads_digits_without_tensorflow(small_model, tmp_path):
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH: install it as the README says (.ci/run does)"
    venv = tmp_path / "serving"
    env = os.environ | {"UV_PROJECT_ENVIRONMENT": str(venv)}
    subprocess.run(
        [uv, "sync", "--frozen", "--no-default-groups", "--no-editable", "--python", sys.executable, "--quiet"],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        timeout=600,
    )

    missing = subprocess.run(
        [
            venv / "bin/python",
            "-c",
            "import importlib.util as u; print([m for m in "
            "('tensorflow', 'keras', 'dvc', 'dvclive', 'matplotlib', 'tf2onnx') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert missing.stdout.strip() == "[]"
    [site_packages] = venv.glob("lib/python*/site-packages")
    installed = {str(f.relative_to(site_packages)) for f in (site_packages / "digitlab").rglob("*") if f.is_file()}
    assert {f for f in installed if "__pycache__" not in f} == SERVING_FILES

    images, labels = load_split(mnist_mirror(), "test")
    digit = tmp_path / "digit.png"
    Image.fromarray(255 - images[0]).resize((280, 280)).save(digit)  # dark ink on paper, as a scan
    read = subprocess.run(
        [venv / "bin/mnist-predict", "--json", "--model", small_model, digit],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["digit"] == labels[0]

    port = free_port()
    server = subprocess.Popen(
        [venv / "bin/mnist-app", "--port", str(port), "--model", small_model],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/predict",
                    timeout=10,
                    files={"image": ("digit.png", digit.read_bytes(), "image/png")},
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "mnist-app did not start"
                time.sleep(0.2)
        assert answer.status_code == 200 and answer.json()["digit"] == labels[0]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_wheel_holds_what_serving_imports_and_nothing_else(tmp_path):
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH: install it as the README says (.ci/run does)"
    subprocess.run([uv, "build", "--wheel", "--out-dir", tmp_path, "--quiet", PROJECT_ROOT], check=True, timeout=300)
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        commands = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {name for name in names if ".dist-info/" not in name} == SERVING_FILES
    # Each command the install puts on the PATH runs a module the wheel holds.
    assert re.findall(r"^([\w-]+) = ([\w.]+):", commands, re.M) == [
        ("mnist-app", "digitlab.serving.app"),
        ("mnist-predict", "digitlab.serving.cli"),
    ]
