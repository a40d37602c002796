"""model.onnx, the model users run: the same bytes for the same weights, and the same answers as
model.keras, or train stops (tests/test_train.py); evaluate scores it without TensorFlow."""

import json
import os
import subprocess
import sys

from digitlab.shared.errors import UserError

import keras
import numpy as np
import pytest
import yaml

from digitlab.files.arrays import save_arrays
from digitlab.inference.onnx_model import load_onnx_model
from digitlab.inference.rejection import thresholds_metadata
from digitlab.inference.views import predict_probabilities
from digitlab.training import fitting
from digitlab.training.model import build_model
from digitlab.training.saving import (
    PARITY_TOLERANCE,
    check_export,
    check_parity,
    exactly_normalised,
    export_onnx,
    load_model,
    save_model,
)
from stages import evaluate
from tests.conftest import PROJECT_ROOT, make_params
from tests.test_train import TINY

# The tiny model exported in a new process, as the train stage exports (`dvc repro` runs it in its own
# process): sys.argv[1] the file, sys.argv[2] where tf2onnx's name counter starts.
EXPORT = """
import sys
import tf2onnx.utils
from digitlab.shared.params import Params
from digitlab.training import fitting
from digitlab.training.model import build_model
from digitlab.training.saving import export_onnx
from tests.test_train import TINY
tf2onnx.utils.INTERNAL_NAME = int(sys.argv[2])
fitting.make_reproducible(0)
export_onnx(build_model(Params.model_validate(TINY).model), sys.argv[1])
"""


def exported_in_a_new_process(path, counter: int = 1, hash_seed: str = "0") -> bytes:
    subprocess.run(
        [sys.executable, "-c", EXPORT, str(path), str(counter)],
        check=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONHASHSEED": hash_seed},
        capture_output=True,
    )
    return path.read_bytes()


# The untrained tiny model's confidences on random images lie between 0.11 and 0.16: thresholds among them.
THRESHOLDS = {1: 0.14, 5: 0.137, 9: 0.137}


def tiny_model(seed: int):
    fitting.make_reproducible(seed)
    return build_model(make_params(TINY).model)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """params.yaml (5 test-time views, batches of 20), 50 random test images and 30 random "non-digits"."""
    rng = np.random.default_rng(0)
    images = rng.random((50, 28, 28, 1), dtype=np.float32)
    save_arrays(tmp_path / "prepared" / "test.npz", images=images, labels=np.arange(50, dtype=np.uint8) % 10)
    save_arrays(
        tmp_path / "prepared" / "nondigits_test.npz",
        images=rng.random((30, 28, 28, 1), dtype=np.float32),
        kinds=np.array(["noise", "letters", "doodles"] * 10),
        hands=np.array(["", "", "sketchy"] * 10),
    )
    save_arrays(
        tmp_path / "prepared" / "user_digits_test.npz",
        images=rng.random((20, 28, 28, 1), dtype=np.float32),
        labels=np.arange(20) % 10,
        looks=np.array(["paper PNG", "transparent"] * 10),
    )
    params = {**TINY, "evaluate": {**TINY["evaluate"], "batch_size": 20, "tta_views": 5}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_models(folder, keras_seed: int, onnx_seed: int):
    save_model(tiny_model(keras_seed), folder / "model" / "model.keras")
    export_onnx(tiny_model(onnx_seed), folder / "model" / "model.onnx", metadata=thresholds_metadata(THRESHOLDS))


def test_exports_of_the_same_weights_give_the_same_bytes_in_this_process_and_in_new_ones(tmp_path):
    # New processes as `dvc repro` runs the train stage, with other string hashing; and this one, after
    # whatever tests ran before it, as a benchmark or a notebook exports.
    first = exported_in_a_new_process(tmp_path / "a.onnx", hash_seed="1")
    assert exported_in_a_new_process(tmp_path / "b.onnx", hash_seed="2") == first
    export_onnx(tiny_model(0), tmp_path / "here.onnx")
    assert (tmp_path / "here.onnx").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx", "here.onnx"]  # no temporary left


def test_the_background_layer_exports_as_elementwise_arithmetic_without_layout_transposes(tmp_path):
    """RemoveBackground was max pooling, which tf2onnx wraps in NHWC/NCHW transposes and then rewrote
    differently from one export to the next (another model.onnx, another dvc.lock, for the same weights).
    Its ONNX nodes are now only what needs no layout."""
    import onnx

    export_onnx(tiny_model(0), tmp_path / "model.onnx")
    layer_ops = {
        node.op_type for node in onnx.load(tmp_path / "model.onnx").graph.node if "remove_background" in node.name
    }
    assert layer_ops == {"Pad", "Slice", "Min", "Max", "Sub", "ReduceMax", "Div"}


def test_the_export_does_not_depend_on_the_counters_of_the_process(tmp_path):
    """tf2onnx numbers what it generates from a counter of the process (where it starts here: 1, 95, 9,990,
    as after other exports) and sorts nodes by those names: export_onnx renumbers them and orders the nodes
    by what they are, so the file does not depend on it."""
    exports = [exported_in_a_new_process(tmp_path / f"from_{start}.onnx", start) for start in (1, 95, 9990)]
    assert exports[1] == exports[0] and exports[2] == exports[0]


def test_the_nodes_come_out_in_one_order_whatever_order_they_came_in(tmp_path):
    """saving.in_canonical_order, the second guard: it orders by what each node is and reads, not by where
    tf2onnx put it (here the exported graph's nodes shuffled, three ways)."""
    import onnx

    from digitlab.training.saving import in_canonical_order

    export_onnx(tiny_model(0), tmp_path / "model.onnx")
    exported = onnx.load(tmp_path / "model.onnx").graph
    for seed in range(3):
        shuffled = onnx.GraphProto()
        shuffled.CopyFrom(exported)
        nodes = list(shuffled.node)
        np.random.default_rng(seed).shuffle(nodes)
        copies = [onnx.NodeProto() for _ in nodes]
        for copy, node in zip(copies, nodes):
            copy.CopyFrom(node)
        del shuffled.node[:]
        shuffled.node.extend(copies)
        assert [node.name for node in shuffled.node] != [node.name for node in exported.node]
        in_canonical_order(shuffled)
        assert list(shuffled.node) == list(exported.node)


def test_the_exported_model_gives_the_keras_models_probabilities(tmp_path):
    model = tiny_model(0)
    export_onnx(model, tmp_path / "model.onnx")
    images = np.random.default_rng(1).random((30, 28, 28, 1), dtype=np.float32)
    onnx = predict_probabilities(load_onnx_model(tmp_path / "model.onnx"), images, batch_size=7, views=5)
    keras = predict_probabilities(model, images, batch_size=7, views=5)
    assert onnx.shape == (30, 10)
    assert 0 <= check_parity(onnx, keras) <= PARITY_TOLERANCE
    assert 0 <= check_export(model, tmp_path / "model.onnx", images) <= PARITY_TOLERANCE


def test_parity_refuses_other_answers_or_probabilities_beyond_the_tolerance():
    keras = np.array([[0.6, 0.4], [0.3, 0.7]])
    assert check_parity(keras + 1e-6, keras) == pytest.approx(1e-6)
    with pytest.raises(UserError, match=r"same answer for 50.00% of the images \(must be all\)"):
        check_parity(np.array([[0.4, 0.6], [0.3, 0.7]]), keras)
    with pytest.raises(UserError, match=r"same answer for 100.00%.*differ by up to 0.001"):
        check_parity(keras + [[1e-3, -1e-3], [0, 0]], keras)


def test_the_export_check_refuses_another_models_file(tmp_path):
    export_onnx(tiny_model(1), tmp_path / "model.onnx")  # a differently seeded model's export
    images = np.random.default_rng(1).random((30, 28, 28, 1), dtype=np.float32)
    with pytest.raises(UserError, match="model.onnx is not the Keras model.*dvc repro --force train"):
        check_export(tiny_model(0), tmp_path / "model.onnx", images)


def test_unreadable_onnx_file_is_reported(tmp_path):
    with pytest.raises(UserError, match="not found; run `dvc repro train`"):
        load_onnx_model(tmp_path / "model.onnx")
    (tmp_path / "model.onnx").write_text("not a model")
    with pytest.raises(UserError, match="is not a readable ONNX model"):
        load_onnx_model(tmp_path / "model.onnx")


def test_evaluate_scores_the_onnx_model(workdir):
    write_models(workdir, keras_seed=0, onnx_seed=0)
    evaluate.main(["prepared", "model/model.onnx", "reports"])
    metrics = json.loads((workdir / "reports/metrics.json").read_text())
    assert list(metrics) == ["test", "reject", "robust"]  # the ONNX parity is train's check, not a metric
    assert list(metrics["test"]) == ["accuracy", "errors", "loss", "macro_f1", "ece", "accepted_accuracy"]
    assert list(metrics["reject"]) == ["threshold", "auroc", "nondigits", "drawn_nondigits", "digits", "user_digits"]
    assert list(metrics["robust"]) == ["mean_accuracy", "worst_accuracy"]
    # What comes from probabilities is written at a precision that every CPU agrees on.
    assert metrics["test"]["loss"] == float(f"{metrics['test']['loss']:.4g}")
    roc_points = json.loads((workdir / "reports/plots/sklearn/roc.json").read_text())["roc"]
    assert all(point["threshold"] == round(point["threshold"], 2) for point in roc_points[1:])
    # The figures are the ONNX model's, with the test-time views of params.yaml, on every image.
    images = np.load(workdir / "prepared/test.npz")["images"]
    keras_model = load_model(workdir / "model/model.keras")
    probabilities = predict_probabilities(keras_model, images, 20, 5)
    labels = np.arange(50) % 10
    assert metrics["test"]["errors"] == int((probabilities.argmax(axis=1) != labels).sum())
    # "Not a digit" at the threshold the ONNX file carries for 5 views, on the test digits and non-digits.
    nondigits = predict_probabilities(keras_model, np.load(workdir / "prepared/nondigits_test.npz")["images"], 20, 5)
    accepted = probabilities.max(axis=1) >= THRESHOLDS[5]
    assert 0 < accepted.mean() < 1  # some refused, some not: the shares below are worth checking
    assert metrics["reject"]["threshold"] == THRESHOLDS[5]
    assert metrics["reject"]["digits"] == pytest.approx(1 - accepted.mean(), abs=1e-6)
    assert metrics["reject"]["nondigits"] == pytest.approx((nondigits.max(axis=1) < THRESHOLDS[5]).mean(), abs=1e-6)
    drawn = nondigits[2::3]  # every third, a doodle in a hand (the others: no hand)
    assert metrics["reject"]["drawn_nondigits"] == pytest.approx((drawn.max(axis=1) < THRESHOLDS[5]).mean(), abs=1e-6)
    users = predict_probabilities(keras_model, np.load(workdir / "prepared/user_digits_test.npz")["images"], 20, 5)
    assert metrics["reject"]["user_digits"] == pytest.approx((users.max(axis=1) < THRESHOLDS[5]).mean(), abs=1e-6)
    assert metrics["test"]["accepted_accuracy"] == pytest.approx(
        (probabilities.argmax(axis=1) == labels)[accepted].mean(), abs=1e-6
    )
    assert 0 <= metrics["reject"]["auroc"] <= 1
    roc = json.loads((workdir / "reports/plots/sklearn/roc.json").read_text())["roc"]
    assert roc[-1]["fpr"] == roc[-1]["tpr"] == 1.0  # every image accepted at the lowest threshold
    by_kind = json.loads((workdir / "reports/rejection.json").read_text())["nondigits_refused_by_kind"]
    assert sorted(by_kind) == ["doodles", "letters", "noise"]


def test_no_constant_of_model_onnx_comes_from_tensorflows_arithmetic(tmp_path):
    # TensorFlow's rsqrt is an estimate refined by a Newton step, whose last bits differ between CPUs (Intel's
    # and AMD's). Batch normalisation's variances where it is not exactly rounded, here:
    import tensorflow as tf

    candidates = np.random.default_rng(0).uniform(0.1, 4, 4096).astype(np.float32)
    model = tiny_model(0)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms
    exact = (1 / np.sqrt(candidates.astype(np.float64) + norms[0].epsilon)).astype(np.float32)
    inexact = candidates[tf.math.rsqrt(candidates + np.float32(norms[0].epsilon)).numpy() != exact]
    assert len(inexact) > 100  # about a quarter of them, on the CPUs seen so far
    for layer in norms:
        gamma, beta, mean, variance = layer.get_weights()
        layer.set_weights([gamma, beta, mean, inexact[: len(variance)]])

    copy = exactly_normalised(model)
    for layer in norms:
        scale, shift = copy.get_layer(layer.name).get_weights()
        gamma, beta, mean, variance = (w.astype(np.float64) for w in layer.get_weights())
        np.testing.assert_array_equal(scale, (gamma / np.sqrt(variance + layer.epsilon)).astype(np.float32))
    # The export goes through that copy: its bytes are the copy's, whose constants NumPy computed.
    export_onnx(model, tmp_path / "model.onnx")
    export_onnx(copy, tmp_path / "copy.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == (tmp_path / "copy.onnx").read_bytes()
