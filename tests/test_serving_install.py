"""The serving-only install, made as a user makes it (`uv sync --frozen --no-default-groups`, into a new
environment): it holds no TensorFlow, Keras, DVC or Matplotlib, and its mnist-predict and mnist-app read
digits with the train stage's ONNX model (docs/using-the-model.md). The wheel holds the library, not
the pipeline's stage scripts."""

import json
import os
import shutil
import subprocess
import sys
import time

import httpx
from PIL import Image

from digitlab.raw.splits import load_split
from tests.conftest import PROJECT_ROOT, free_port, mnist_mirror


def test_the_serving_only_install_reads_digits_without_tensorflow(small_model, tmp_path):
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH: install it as the README says (.ci/run does)"
    venv = tmp_path / "serving"
    env = os.environ | {"UV_PROJECT_ENVIRONMENT": str(venv)}
    subprocess.run(
        [uv, "sync", "--frozen", "--no-default-groups", "--python", sys.executable, "--quiet"],
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


def test_the_wheel_holds_the_library_and_the_page_but_not_the_pipelines_scripts(tmp_path):
    import zipfile

    uv = shutil.which("uv")
    assert uv, "uv is not on PATH: install it as the README says (.ci/run does)"
    # Built from a copy: setuptools writes build/ and *.egg-info/ beside pyproject.toml.
    source = tmp_path / "source"
    for name in ("digitlab", "stages"):
        shutil.copytree(PROJECT_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT_ROOT / name, source / name)
    subprocess.run([uv, "build", "--wheel", "--out-dir", tmp_path / "dist", "--quiet", source], check=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"digitlab"}
    assert "digitlab/serving/static/index.html" in names and "digitlab/inference/onnx_model.py" in names
