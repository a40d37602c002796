"""train.distribute: mirrored over two logical CPU devices, multi_worker as two processes on 127.0.0.1.

With plain SGD, no dropout and no augmentation, synchronous data parallelism must give the weights
of one device training on the same global batches: each replica's gradient is scaled by the global
batch size and batch normalisation uses the global batch's statistics. Adam would hide a wrongly
scaled gradient (it is nearly scale-invariant), so SGD it is.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from digitlab.shared.errors import UserError

import keras
import numpy as np
import pytest
import yaml

from digitlab.files.arrays import save_arrays
from digitlab.training import distribute
from stages import train
from tests.conftest import PROJECT_ROOT, free_ports, make_params

SYNCHRONOUS = {
    "model.conv_filters": [4],
    "model.convs_per_block": 1,
    "model.dense_units": 16,
    "model.batch_norm": True,
    "model.dropout": 0.0,
    # Without the RemoveBackground layer: with it, SGD at 0.05 on noise turns the rounding differences of
    # one device and two (1e-7 after 5 steps, as without it) into 1e-2 after 10 (0.01 delays it). Its
    # forward pass is the same split over replicas; what is compared here is the distribution itself.
    "model.background_window": 0,
    "train.optimizer": "sgd",
    "train.learning_rate": 0.05,
    "train.lr_schedule": "constant",
    "train.epochs": 2,
    "train.batch_size": 64,
    "train.augment.shift_fraction": 0,  # every other distortion is off in BASE_PARAMS
    "train.ema_momentum": 0.5,  # the saved weights are the replicas' moving average, also to be the same
}
TRAIN_FILES = [
    "model.keras",
    "model.onnx",
    "reports/metrics.json",
    "reports/model_summary.txt",
    "reports/speed.json",
    "reports/plots/metrics/eval/accuracy.tsv",
    "reports/plots/metrics/eval/loss.tsv",
    "reports/plots/metrics/train/accuracy.tsv",
    "reports/plots/metrics/train/loss.tsv",
]

# Two logical CPU devices must be set up before TensorFlow starts, so mirrored runs in its own process.
TWO_CPU_DEVICES = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from digitlab.shared.errors import run_command
from stages import train
sys.argv[1:] = ["prepared", "model.keras", "reports"]
run_command(train.main)
"""


def make_project(folder: Path, distribute_setting: str, epochs: int = 2, train_count: int = 640) -> Path:
    """params.yaml, `train_count` training images (10 batches of 64) and 100 validation images of random
    noise, an empty set of training non-digits and 10 validation ones."""
    rng = np.random.default_rng(0)
    for name, count in (("train", train_count), ("val", 100)):
        images = rng.random((count, 28, 28, 1), dtype=np.float32)
        save_arrays(folder / "prepared" / f"{name}.npz", images=images, labels=rng.integers(0, 10, count, np.uint8))
    # No non-digits: the weights are compared to 2e-5 after two epochs of SGD on noise, where rounding
    # differences between one device and two grow with the data, and 64 more images (704 in all, as 768
    # digits alone) already took them past it. Non-digits join the digits before the tf.data pipeline
    # (fitting.training_targets), so they take the path tested here.
    save_arrays(
        folder / "prepared" / "nondigits_train.npz",
        images=np.zeros((0, 28, 28, 1), np.float32),
        kinds=np.array([], dtype=np.str_),
    )
    # Validation's non-digits are only predicted after training, for "not a digit" on validation.
    save_arrays(
        folder / "prepared" / "nondigits_val.npz",
        images=rng.random((10, 28, 28, 1), dtype=np.float32),
        kinds=np.array(["noise"] * 10),
        hands=np.array(["brush"] * 10),
    )
    save_arrays(
        folder / "prepared" / "user_digits_val.npz",
        images=rng.random((10, 28, 28, 1), dtype=np.float32),
        labels=np.arange(10) % 10,
        looks=np.array(["paper PNG"] * 10),
    )
    params = make_params({**SYNCHRONOUS, "train.epochs": epochs, "train.distribute": distribute_setting})
    (folder / "params.yaml").write_text(yaml.safe_dump(params.model_dump()))
    return folder


def start(folder: Path, *command: str, tf_config: dict | None = None, log=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, *command], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen, timeout: int = 240) -> str:
    output = process.communicate(timeout=timeout)[0]
    assert process.returncode == 0, output
    return output


def cluster(ports: list[int], index: int) -> dict:
    return {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}


def files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def weights(path: Path) -> list[np.ndarray]:
    return keras.saving.load_model(path).get_weights()


def fingerprint(output: str) -> str:
    return output.split("weights ")[-1].split(")")[0].split(";")[0]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> Path:
    folder = make_project(tmp_path_factory.mktemp("one_device"), "none")
    finish(start(folder, "-m", "stages.train", "prepared", "model.keras", "reports"))
    return folder


def test_mirrored_on_two_devices_gives_the_one_device_weights(one_device, tmp_path):
    folder = make_project(tmp_path, "mirrored")
    output = finish(start(folder, "-c", TWO_CPU_DEVICES))
    assert "mirrored over" in output and "CPU:0" in output and "CPU:1" in output, output
    assert (
        files(folder)
        == files(one_device)
        == sorted(
            [
                "params.yaml",
                "prepared/nondigits_train.npz",
                "prepared/nondigits_val.npz",
                "prepared/user_digits_val.npz",
                "prepared/train.npz",
                "prepared/val.npz",
                *TRAIN_FILES,
            ]
        )
    )
    for ours, reference in zip(weights(folder / "model.keras"), weights(one_device / "model.keras"), strict=True):
        np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_two_workers_train_the_same_weights_and_only_the_chief_writes(one_device, tmp_path):
    folder = make_project(tmp_path, "multi_worker")
    ports = free_ports(2)
    workers = [
        start(folder, "-m", "stages.train", "prepared", "model.keras", "reports", tf_config=cluster(ports, i))
        for i in (0, 1)
    ]
    chief, other = (finish(worker) for worker in workers)
    assert "worker 0 of 2 machines" in chief and "worker 1 of 2 machines" in other
    assert "the chief writes the model and reports" in other
    assert fingerprint(chief) == fingerprint(other), chief + other
    # The chief's outputs are those of a one-device run, file for file and key for key; the other wrote nothing.
    assert files(folder) == files(one_device)
    for name in ("metrics.json", "speed.json"):
        ours, reference = (json.loads((root / "reports" / name).read_text()) for root in (folder, one_device))
        assert ours.keys() == reference.keys()
    # Validation is measured over the whole split, on both workers together: the one-device figure.
    ours, reference = (json.loads((root / "reports/metrics.json").read_text()) for root in (folder, one_device))
    assert ours["eval"]["accuracy"] == pytest.approx(reference["eval"]["accuracy"], abs=0.011)
    for ours, reference in zip(weights(folder / "model.keras"), weights(one_device / "model.keras"), strict=True):
        np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_a_killed_worker_stops_the_other_with_a_clear_error(tmp_path):
    # 639 images: 320 on one worker, 319 on the other. Unless both take the same number of batches,
    # the one with more waits for the other at its last step until the peer timeout.
    folder = make_project(tmp_path / "project", "multi_worker", epochs=1000, train_count=639)
    ports = free_ports(2)
    with open(tmp_path / "chief.log", "w") as log:  # a file: a pipe nobody reads would fill up and stall the chief
        chief = start(
            folder, "-m", "stages.train", "prepared", "model.keras", "reports", tf_config=cluster(ports, 0), log=log
        )
    other = start(folder, "-m", "stages.train", "prepared", "model.keras", "reports", tf_config=cluster(ports, 1))
    seen = []
    for line in other.stdout:  # wait until both are training
        seen.append(line)
        if line.startswith("epoch 2/"):
            break
    assert seen[-1].startswith("epoch 2/"), "".join(seen)
    other.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    chief.wait(timeout=180)
    output = (tmp_path / "chief.log").read_text()
    # TensorFlow's coordination service notices the missing heartbeats (38 s after the kill, measured here).
    assert time.monotonic() - killed < 120
    assert chief.returncode == 1, output
    error = output[output.index("error: training stopped because another worker failed or could not be reached") :]
    assert "task:1" in error.splitlines()[0], output  # it names the worker that was lost
    assert not (folder / "model.keras").exists()


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "TF_CONFIG is not set"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG has no "cluster"'),
        (
            '{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
            "address 'localhost' is not \"host:port\"",
        ),
        (
            '{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
            'cluster "ps" must be "chief" or "worker"',
        ),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', 'TF_CONFIG has no "task"'),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "chief", "index": 0}}',
            "task type 'chief' is not in the cluster",
        ),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
            'task index 2 is not one of the 2 "worker" addresses',
        ),
    ],
)
def test_a_malformed_tf_config_gives_one_line_naming_the_problem(tf_config, message, tmp_path, monkeypatch):
    folder = make_project(tmp_path, "multi_worker")
    monkeypatch.chdir(folder)
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(UserError) as raised:
        train.main(["prepared", "model.keras", "reports"])
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (folder / "model.keras").exists() and not (folder / "reports").exists()


@pytest.mark.parametrize(
    "tf_config, chief",
    [
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
        ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
        ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
    ],
)
def test_the_chief_is_the_chief_task_or_else_worker_0(tf_config, chief, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert distribute.is_chief("multi_worker") is chief
    assert distribute.is_chief("none") is True  # TF_CONFIG only matters to multi_worker
