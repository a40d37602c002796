"""The train stage on tiny data: reproducible, stops on divergence, interruptible without damage."""

import json
import os
import signal
import subprocess
import sys
import time

from digitlab.shared.errors import UserError
from digitlab.shared.params import Augment, Train

import keras
import numpy as np
import pytest
import yaml

from digitlab.files.arrays import save_arrays
from digitlab.training import fitting
from digitlab.training.model import FusedBatchNormalization, build_model
from stages import train
from tests.conftest import PROJECT_ROOT, make_params

TINY = make_params(
    {
        "model.conv_filters": [4],
        "model.convs_per_block": 1,
        "model.dense_units": 8,
        "train.epochs": 2,
        "train.batch_size": 32,
        # Every distortion on, so that the reproducibility test covers them all.
        "train.augment": {
            "rotation_degrees": 10,
            "shift_fraction": 0.1,
            "zoom_fraction": 0.1,
            "elastic_alpha": 34,
            "elastic_sigma": 4,
            "shear": 0.3,
            "stroke_width": 0.5,
        },
    }
).model_dump()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with params.yaml, 200 random training and 50 validation images, 20 "non-digits" in
    each of the training and validation splits, and 20 validation "digits as users send them"."""
    rng = np.random.default_rng(0)
    for name, count in (("train", 200), ("val", 50)):
        images = rng.random((count, 28, 28, 1), dtype=np.float32)
        save_arrays(tmp_path / "prepared" / f"{name}.npz", images=images, labels=np.arange(count, dtype=np.uint8) % 10)
    for name in ("nondigits_train", "nondigits_val"):
        save_arrays(
            tmp_path / "prepared" / f"{name}.npz",
            images=rng.random((20, 28, 28, 1), dtype=np.float32),
            kinds=np.array(["noise", "doodles"] * 10),
            hands=np.array(["", "brush"] * 10),
        )
    save_arrays(
        tmp_path / "prepared" / "user_digits_val.npz",
        images=rng.random((20, 28, 28, 1), dtype=np.float32),
        labels=np.arange(20) % 10,
        looks=np.array(["paper PNG"] * 20),
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def random_digits() -> dict:
    """64 random images, labelled 0-9 in turn: enough for `fit` to run, not to learn."""
    images = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    return {"images": images, "labels": np.arange(64, dtype=np.uint8) % 10}


def run_train(workdir, name="model.keras", reports="reports"):
    train.main([str(workdir / "prepared"), str(workdir / name), str(workdir / reports)])


def test_same_params_and_seed_give_identical_metrics(workdir):
    run_train(workdir, "a.keras", "a")
    run_train(workdir, "b.keras", "b")
    assert (workdir / "a/metrics.json").read_bytes() == (workdir / "b/metrics.json").read_bytes()
    metrics = json.loads((workdir / "a/metrics.json").read_text())
    # Validation's figures and the size: the training split's stay in the curves, not in the metrics.
    assert metrics["step"] == 1 and list(metrics) == ["model", "eval", "step", "reject"]
    assert list(metrics["reject"]) == [
        "val_nondigits",
        "val_drawn_nondigits",
        "val_digits",
        "val_user_digits",
    ]  # "not a digit", judged on validation
    # Written at a precision that every CPU agrees on (digitlab/inference/rounding.py).
    losses = [
        float(line.split()[1])
        for split in ("train", "eval")
        for line in (workdir / f"a/plots/metrics/{split}/loss.tsv").read_text().splitlines()[1:]
    ]
    assert all(loss == float(f"{loss:.4g}") for loss in [metrics["eval"]["loss"], *losses]), losses
    assert (workdir / "a/plots/metrics/train/accuracy.tsv").is_file()
    assert (workdir / "a.keras").read_bytes() == (workdir / "b.keras").read_bytes()  # the same model file, too
    summary = (workdir / "a/model_summary.txt").read_text()
    assert f"Total params: {metrics['model']['params']:,}" in summary and "Optimizer" not in summary
    assert "(BatchNormalization)" in summary and "Fused" not in summary  # the saved model's layers, not training's


@pytest.mark.parametrize(
    "augment, expected",
    [
        ({"rotation_degrees": 0, "shift_fraction": 0, "zoom_fraction": 0, "elastic_alpha": 0}, None),
        ({"rotation_degrees": 0, "shift_fraction": 0.1, "zoom_fraction": 0, "elastic_alpha": 0}, ["RandomTranslation"]),
        (
            {"rotation_degrees": 0, "shift_fraction": 0, "zoom_fraction": 0, "elastic_alpha": 0, "shear": 0.3},
            ["RandomShear"],
        ),
        (
            {"rotation_degrees": 0, "shift_fraction": 0, "zoom_fraction": 0, "elastic_alpha": 0, "stroke_width": 0.5},
            ["StrokeWidth"],
        ),
        (
            {
                "rotation_degrees": 10,
                "shift_fraction": 0.1,
                "zoom_fraction": 0.1,
                "elastic_alpha": 34,
                "shear": 0.3,
                "stroke_width": 0.5,
            },
            ["StrokeWidth", "RandomShear", "ElasticDistortion", "RandomRotation", "RandomTranslation", "RandomZoom"],
        ),
    ],
)
def test_augmentation_has_one_layer_per_distortion_switched_on(augment, expected):
    distort = fitting.augmentation(Augment(**{"shear": 0, "stroke_width": 0, **augment}, elastic_sigma=4), seed=0)
    layer_names = None if distort is None else [type(layer).__name__ for layer in distort.layers]
    assert layer_names == expected
    if distort is not None:
        images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
        distorted = np.asarray(distort(images, training=True))
        assert distorted.shape == images.shape and not np.allclose(distorted, images)


def test_stroke_width_makes_strokes_thinner_or_bolder_by_at_most_a_pixel_a_side():
    line = np.zeros((256, 28, 28, 1), np.float32)
    line[:, 4:24, 12:15] = 1  # a stroke three pixels wide
    seen = np.asarray(fitting.StrokeWidth(1.0, seed=0)(line, training=True))
    ink = seen[:, 14].sum(axis=(1, 2))  # the stroke's width, in pixels, half-way down
    assert ink.min() < 2 and ink.max() > 4  # thinner and bolder, both
    assert 1 <= ink.min() and ink.max() <= 5 and seen.min() >= 0 and seen.max() <= 1  # by one pixel a side at most
    assert np.allclose(seen[:, :, :11], 0) and np.allclose(seen[:, :, 16:], 0)
    assert np.array_equal(np.asarray(fitting.StrokeWidth(1.0, seed=0)(line, training=False)), line)


def test_diverging_training_stops_with_a_clear_error_and_writes_no_model(workdir):
    poisoned = np.full((200, 28, 28, 1), np.nan, dtype=np.float32)
    save_arrays(workdir / "prepared" / "train.npz", images=poisoned, labels=np.zeros(200, np.uint8))
    with pytest.raises(UserError, match="training diverged"):
        run_train(workdir)
    assert not (workdir / "model.keras").exists()


def test_sigterm_during_training_keeps_the_previous_model(workdir):
    (workdir / "model.keras").write_bytes(b"previous model")
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["epochs"] = 200  # long enough to be interrupted
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.train", "prepared", "model.keras", "reports"],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    for line in process.stdout:  # wait until training is under way
        output.append(line)
        if line.startswith("epoch 2/"):
            break
    process.send_signal(signal.SIGTERM)
    output.append(process.communicate(timeout=60)[0])
    assert any(line.startswith("epoch 2/") for line in output), "".join(output)  # interrupted mid-training
    assert process.returncode == 128 + signal.SIGTERM, "".join(output)  # the orderly exit of run_command, not a crash
    assert (workdir / "model.keras").read_bytes() == b"previous model"
    assert not list(workdir.glob(".*partial*"))


@pytest.mark.parametrize(
    "schedule, warmup_epochs, expected",
    [
        # 4 epochs of 10 steps; the rate at steps 0, 5, 10, 20, 40
        ("constant", 0, [0.003, 0.003, 0.003, 0.003, 0.003]),
        ("constant", 1, [0.0, 0.0015, 0.003, 0.003, 0.003]),
        ("cosine", 0, [0.003, 0.00289, 0.00256, 0.0015, 0.0]),
        ("cosine", 1, [0.0, 0.0015, 0.003, 0.00225, 0.0]),
    ],
)
def test_learning_rate_warms_up_then_holds_or_decays(schedule, warmup_epochs, expected):
    train_params = Train(
        **{
            **make_params().train.model_dump(),
            "learning_rate": 0.003,
            "epochs": 4,
            "lr_schedule": schedule,
            "warmup_epochs": warmup_epochs,
        }
    )
    rate = fitting.learning_rate(train_params, steps_per_epoch=10)
    rates = [float(rate(step)) if callable(rate) else rate for step in (0, 5, 10, 20, 40)]
    assert rates == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_in_16_bits_and_returns_a_float32_model(precision):
    built = build_model(make_params().model, precision)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    assert {layer.compute_dtype for layer in built.layers if isinstance(layer, keras.layers.Conv2D)} == {
        precision.removeprefix("mixed_")
    }
    assert built.get_layer("digit").compute_dtype == "float32"  # the softmax and the loss stay accurate

    arrays = random_digits()
    params = make_params({"train.epochs": 1, "train.batch_size": 32, "train.mixed_precision": precision})
    model = fitting.fit(params, arrays, arrays)
    assert {layer.compute_dtype for layer in model.layers} == {"float32"}
    assert np.isfinite(model.predict_on_batch(arrays["images"][:4])).all()


def test_training_normalises_with_the_fused_kernel_and_returns_keras_own_layers():
    """Trained with FusedBatchNormalization (faster), returned with Keras's BatchNormalization (loads
    anywhere), with every weight and running statistic carried over."""
    arrays = random_digits()

    class Spy(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            trained.update(layers={type(layer) for layer in self.model.layers}, weights=self.model.get_weights())

    trained = {}
    model = fitting.fit(make_params({"train.epochs": 1, "train.batch_size": 32}), arrays, arrays, callbacks=[Spy()])
    assert FusedBatchNormalization in trained["layers"]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 5 and {type(layer) for layer in norms} == {keras.layers.BatchNormalization}
    assert not np.allclose(norms[0].moving_variance, 1.0)  # the running statistics moved, and came along
    for saved, expected in zip(model.get_weights(), trained["weights"], strict=True):
        np.testing.assert_array_equal(saved, expected)


def test_elastic_distortion_moves_strokes_smoothly_and_keeps_the_image():
    """A vertical bar, distorted: still one bar of about the same ink, bent a little, not shuffled pixels."""
    bar = np.zeros((64, 28, 28, 1), np.float32)
    bar[:, 4:24, 12:16] = 1.0
    distort = fitting.ElasticDistortion(alpha=34, sigma=4, seed=0)
    distorted = np.asarray(distort(bar, training=True))
    assert distorted.shape == bar.shape and distorted.min() >= 0 and distorted.max() <= 1
    assert not np.allclose(distorted, bar)
    # A smooth field stretches strokes here and squeezes them there, but moves the ink rather than
    # creating or losing it: the same ink on average (0.79 to 1.24 of it on real digits, 0.7 to 1.4 on this bar).
    ink = distorted.sum(axis=(1, 2, 3)) / bar.sum(axis=(1, 2, 3))
    assert abs(ink.mean() - 1) < 0.05 and ((ink > 0.5) & (ink < 1.5)).all()
    # Smooth: neighbouring pixels move together, so the bar stays in one piece near where it was.
    columns = distorted[:, 8:20].sum(axis=(1, 3))  # ink per column in the bar's middle rows
    assert (columns[:, 8:20].sum(axis=1) / columns.sum(axis=1) > 0.9).all()
    # Each image gets its own field.
    assert not np.allclose(distorted[0], distorted[1])
    assert np.array_equal(np.asarray(distort(bar, training=False)), bar)


def test_ema_momentum_validates_and_returns_the_moving_average_of_the_weights():
    """One step per epoch, so the weights seen at each epoch's end are the weights after each step."""
    arrays = random_digits()
    params = make_params(
        {"train.epochs": 4, "train.batch_size": 64, "train.lr_schedule": "constant", "train.ema_momentum": 0.5}
    )

    class Recorder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            steps.append([np.array(weight) for weight in self.model.trainable_weights])
            last_logs.update(logs)

    steps, last_logs = [], {}
    model = fitting.fit(params, arrays, arrays, callbacks=[Recorder()])
    average = steps[0]  # Keras starts the average at the weights after the first step
    for weights in steps[1:]:
        average = [0.5 * mean + 0.5 * weight for mean, weight in zip(average, weights)]
    assert not np.allclose(steps[-1][0], average[0])  # the last weights are not their average
    for saved, expected in zip(model.trainable_weights, average):
        np.testing.assert_allclose(np.array(saved), expected, atol=1e-6)
    # The last validation measured these averaged weights, i.e. the saved model.
    probabilities = model.predict_on_batch(arrays["images"])
    assert last_logs["val_accuracy"] == pytest.approx((probabilities.argmax(1) == arrays["labels"]).mean())
    targets = np.eye(10, dtype=np.float32)[arrays["labels"]]
    # Written with 4 significant digits (digitlab/inference/rounding.py).
    assert last_logs["val_loss"] == pytest.approx(
        float(keras.losses.categorical_crossentropy(targets, probabilities).numpy().mean()), rel=1e-3
    )


def test_the_same_weights_give_the_same_model_file_bytes(tmp_path):
    from digitlab.training.saving import save_model

    paths = []
    for name in ("first", "second"):
        if paths:
            time.sleep(2.1)  # a later save time, to the zip format's 2-second step and Keras's 1-second one
        # Two models built apart: new Python objects (Keras writes their addresses), the same seeded weights.
        fitting.make_reproducible(0)
        model = build_model(make_params(TINY).model)
        paths.append(tmp_path / name / "model.keras")
        save_model(model, paths[-1])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    loaded = keras.saving.load_model(paths[0], safe_mode=True)
    assert [w.tolist() for w in loaded.get_weights()] == [w.tolist() for w in model.get_weights()]
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == ["model.keras"]  # no temporary left behind


def test_rejection_is_measured_on_validation_and_a_false_rejection_of_0_refuses_nothing(workdir):
    from digitlab.shared.tta import DEFAULT_VIEWS

    from digitlab.inference.onnx_model import load_onnx_model
    from digitlab.inference.views import PREDICT_BATCH, predict_probabilities

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    for false_rejection in (0.5, 0):
        params["reject"]["false_rejection"] = false_rejection
        (workdir / "params.yaml").write_text(yaml.safe_dump(params))
        run_train(workdir)
        reject = json.loads((workdir / "reports/metrics.json").read_text())["reject"]
        thresholds = load_onnx_model(workdir / "model.onnx").thresholds
        if false_rejection:
            # Half the validation digits (25 of 50, the threshold's own tie accepted), and some non-digits.
            assert reject["val_digits"] in (0.48, 0.5) and 0 < reject["val_nondigits"] <= 1
            assert 0 < reject["val_user_digits"] < 1 and 0 < reject["val_drawn_nondigits"] <= 1
            assert all(0 < threshold < 1 for threshold in thresholds.values())
            # The drawn ones are those with a hand: every other non-digit (fixture), not all of them.
            model = load_onnx_model(workdir / "model.onnx")
            nondigits = np.load(workdir / "prepared/nondigits_val.npz")["images"]
            confidence = predict_probabilities(model, nondigits[1::2], PREDICT_BATCH, DEFAULT_VIEWS).max(axis=1)
            assert reject["val_drawn_nondigits"] == pytest.approx((confidence < thresholds[5]).mean(), abs=1e-6)
            users = np.load(workdir / "prepared/user_digits_val.npz")["images"]
            confidence = predict_probabilities(model, users, PREDICT_BATCH, DEFAULT_VIEWS).max(axis=1)
            assert reject["val_user_digits"] == pytest.approx((confidence < thresholds[5]).mean(), abs=1e-6)
        else:
            assert reject == {
                "val_nondigits": 0.0,
                "val_drawn_nondigits": 0.0,
                "val_digits": 0.0,
                "val_user_digits": 0.0,
            }
            assert thresholds == {1: 0.0, 5: 0.0, 9: 0.0}


def test_train_stops_when_model_onnx_does_not_answer_as_the_keras_model(workdir, monkeypatch):
    from digitlab.training.saving import export_onnx

    def export_another_model(model, path, metadata):
        export_onnx(build_model(make_params(TINY).model), path, metadata)  # new, untrained weights

    monkeypatch.setattr(train, "export_onnx", export_another_model)
    with pytest.raises(UserError, match="model.onnx is not the Keras model"):
        run_train(workdir)


def test_a_callback_can_stop_training_early():
    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epochs.append(epoch)
            self.model.stop_training = True

    epochs = []
    fitting.fit(
        make_params({"train.epochs": 3, "train.batch_size": 32}),
        random_digits(),
        random_digits(),
        callbacks=[StopAfterFirstEpoch()],
    )
    assert epochs == [0]


def test_batch_normalisation_averages_over_a_tenth_of_a_short_run_and_the_last_100_steps_of_a_long_one():
    assert fitting.norm_momentum(10_632) == 0.99  # the default run: Keras's own momentum, the same model as before
    assert fitting.norm_momentum(1_000) == 0.99
    assert fitting.norm_momentum(150) == pytest.approx(1 - 1 / 15)
    assert fitting.norm_momentum(5) == 0.0


def test_a_quick_run_on_a_subset_reads_new_digits_as_well_as_its_training_batches():
    """3,000 MNIST images and one epoch (47 steps): before batch normalisation's momentum followed the
    length of the run, such a model was right on 90% of its batches and read the test images at chance."""
    from tests.conftest import mnist_mirror

    mirror = mnist_mirror()
    if mirror is None:
        pytest.skip("no MNIST files: run `dvc repro fetch`, or set MNIST_MIRROR to a folder holding them")
    from digitlab.images.mnist_look import to_model_input
    from digitlab.raw.splits import load_split

    images, labels = load_split(mirror, "train")
    test_images, test_labels = load_split(mirror, "test")
    train_split = {"images": to_model_input(images[:3000]), "labels": labels[:3000]}
    test_split = {"images": to_model_input(test_images[:1000]), "labels": test_labels[:1000]}
    logs = {}

    class LastLogs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, epoch_logs=None):
            logs.update(epoch_logs)

    model = fitting.fit(
        make_params({"train.epochs": 1, "train.batch_size": 64}), train_split, test_split, callbacks=[LastLogs()]
    )
    accuracy = (model.predict_on_batch(test_split["images"]).argmax(axis=1) == test_split["labels"]).mean()
    assert accuracy > 0.85 and accuracy >= logs["accuracy"], (logs, accuracy)  # 91% against 71% on its batches


@pytest.mark.parametrize("imports", ["import digitlab.training.model", "import digitlab.shared; import keras"])
def test_tensorflows_start_up_lines_are_dropped_whoever_imports_it(imports):
    # On a machine without a GPU, TensorFlow logs oneDNN's notice and "Could not find cuda drivers" (INFO)
    # and "failed call to cuInit" (ERROR) before TF_CPP_MIN_LOG_LEVEL applies; digitlab.shared, imported first
    # by every module of the project, drops them.
    result = subprocess.run(
        [sys.executable, "-c", f"{imports}; import sys; assert 'tensorflow' in sys.modules; sys.stderr.write('x\\n')"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == "x\n", result.stderr
