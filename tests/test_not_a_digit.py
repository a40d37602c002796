""" "Not a digit": the threshold and how it travels in model.onnx, training on non-digits, and the answer
that the reader, mnist-predict (plain and --json) and the app give for an image holding no digit, on
the small model of conftest (trained as the train stage trains, non-digits included). --accept-all
(accept_all=True) turns the answer off."""

import json

from digitlab.shared.errors import UserError

import keras
import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient
from PIL import Image

from digitlab.images.nondigits import KINDS, LOOKS, nondigit_images
from digitlab.inference.onnx_model import load_onnx_model
from digitlab.inference.rejection import (
    METADATA_KEY,
    NOT_A_DIGIT,
    choose_threshold,
    rejected,
    thresholds_from_metadata,
    thresholds_metadata,
)
from digitlab.serving import app as web
from digitlab.serving.reader import DigitReader
from digitlab.training import fitting
from tests.conftest import make_params
from tests.test_app import post_file
from tests.test_cli import photo, run, save
from tests.test_train import TINY


def test_the_threshold_refuses_at_most_the_share_of_digits_asked():
    confidences = np.random.default_rng(0).uniform(0.5, 1, size=1000)
    for share in (0.0015, 0.002, 0.01, 0.1):  # 0.0015 of 1,000: one digit below, not two
        threshold = choose_threshold(confidences, share)
        assert rejected(confidences, threshold).mean() == pytest.approx(share, abs=2 / 1000)
        assert rejected(confidences, threshold).mean() <= share
    assert not rejected(confidences, choose_threshold(confidences, 0)).any()  # 0: never refuse


def test_thresholds_round_trip_through_the_metadata_and_a_malformed_entry_is_one_clear_error():
    thresholds = {1: 0.9312345678901234, 5: 0.91, 9: 0.9}
    assert thresholds_from_metadata(thresholds_metadata(thresholds), "m.onnx") == thresholds
    assert thresholds_from_metadata({}, "old.onnx") == {}  # trained before thresholds: none
    with pytest.raises(UserError, match=f"m.onnx: its {METADATA_KEY} metadata is malformed"):
        thresholds_from_metadata({METADATA_KEY: "[0.9"}, "m.onnx")


def test_outliers_are_mixed_into_training_with_a_flat_target_and_left_out_of_its_accuracy():
    rng = np.random.default_rng(0)
    digits = {"images": rng.random((30, 28, 28, 1), dtype=np.float32), "labels": np.arange(30) % 10}
    outliers = rng.random((6, 28, 28, 1), dtype=np.float32)
    images, targets = fitting.training_targets(digits, outliers)
    assert len(images) == len(targets) == 36
    np.testing.assert_array_equal(targets[30:], np.full((6, 10), 0.1, np.float32))
    np.testing.assert_array_equal(targets[:30].argmax(axis=1), digits["labels"])
    assert fitting.is_digit(tf.constant(targets)).numpy().tolist() == [1.0] * 30 + [0.0] * 6
    batches = list(
        fitting.training_batches(
            digits,
            8,
            fitting.Augment(
                rotation_degrees=0,
                shift_fraction=0,
                zoom_fraction=0,
                elastic_alpha=0,
                elastic_sigma=4,
                shear=0,
                stroke_width=0,
            ),
            0,
            outliers=outliers,
        )
    )
    assert sum(len(x) for x, _ in batches) == 36
    assert sum(int((y.numpy().max(axis=1) < 0.5).sum()) for _, y in batches) == 6


def short_run_params(overrides: dict | None = None):
    """The tiny model, 8 epochs of 16 images at a constant 0.01, unshifted: enough to learn noise labelled 1."""
    return make_params(
        {
            "model": TINY["model"],
            "train.epochs": 8,
            "train.batch_size": 16,
            "train.lr_schedule": "constant",
            "train.learning_rate": 0.01,
            "train.augment.shift_fraction": 0,
            **(overrides or {}),
        }
    )


def test_a_non_digits_weight_in_the_loss_is_reject_outlier_weight():
    targets = tf.constant(np.concatenate([np.eye(10, dtype=np.float32)[[3, 7]], np.full((2, 10), 0.1, np.float32)]))
    assert fitting.loss_weights(targets, 0.5).numpy().tolist() == [1.0, 1.0, 0.5, 0.5]
    # In training: "digits" of noise all labelled 1, and "non-digits" of the same noise. Weighted 0, the
    # non-digits teach nothing; weighted 1, their flat answer pulls the model's answer to them (and to the
    # digits, which it cannot tell apart) away from a sure 1.
    rng = np.random.default_rng(0)
    digits = {"images": rng.random((64, 28, 28, 1), dtype=np.float32), "labels": np.ones(64, np.int64)}
    squares = rng.random((64, 28, 28, 1), dtype=np.float32)
    sureness = {}
    for weight in (0.0, 1.0):
        params = short_run_params({"reject.outlier_weight": weight})
        model = fitting.fit(params, digits, digits, outliers=squares)
        sureness[weight] = float(model.predict(squares, verbose=0).max(axis=1).mean())
    assert sureness[1.0] < sureness[0.0] - 0.1, sureness  # measured: 0.20 against 0.36


def test_the_training_accuracy_logged_is_the_digits_alone():
    """Digits all labelled 1 and as many outliers: a model that answers 1 to everything is right on every
    digit, and would score at most half if the outliers, whose flat target's argmax is 0, were counted."""
    rng = np.random.default_rng(0)
    digits = {"images": rng.random((64, 28, 28, 1), dtype=np.float32), "labels": np.ones(64, np.int64)}
    logs = []

    class Logs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, epoch_logs=None):
            logs.append(epoch_logs)

    params = short_run_params()
    fitting.fit(params, digits, digits, callbacks=[Logs()], outliers=rng.random((64, 28, 28, 1), dtype=np.float32))
    assert logs[-1]["val_accuracy"] == 1.0 and logs[-1]["accuracy"] > 0.9, logs


def non_digits(kind: str, count: int) -> list[Image.Image]:
    """`count` images of one kind from the non-digits' test split (the pipeline never trains on it)."""
    return [
        image
        for image, made_kind, _, _ in nondigit_images(len(KINDS) * len(LOOKS) * count, 0, "test")
        if made_kind == kind
    ][:count]


def test_the_small_model_carries_a_threshold_for_every_number_of_views(small_model):
    thresholds = load_onnx_model(small_model).thresholds
    assert sorted(thresholds) == [1, 5, 9] and all(0.1 < value < 1 for value in thresholds.values()), thresholds


def test_the_reader_refuses_non_digits_and_reads_clear_digits(small_model, digits):
    images, labels = digits
    clear = [photo(image, seed) for seed, image in enumerate(images[:10])]
    with DigitReader(small_model) as reader:
        readings = reader.read(clear + non_digits("noise", 4) + non_digits("textures", 2) + non_digits("numbers", 2))
    read, refused = readings[:10], readings[10:]
    assert [r.digit for r in read] == labels[:10].tolist() and not any(r.error for r in read)
    assert sum(r.error == NOT_A_DIGIT for r in refused) >= 6, [(r.error, r.confidence) for r in refused]
    for reading in refused:
        if reading.error == NOT_A_DIGIT:  # no guess, but the model's probabilities, for who wants them
            assert reading.digit is None and reading.runner_up is None and len(reading.probabilities) == 10
            assert reading.confidence == max(reading.probabilities) < reader.threshold


def test_accept_all_gives_every_image_its_most_likely_digit(small_model):
    noise = non_digits("noise", 4)
    with DigitReader(small_model, accept_all=True) as reader:
        readings = reader.read(noise)
    assert reader.threshold is None
    assert all(r.error is None and r.digit == int(np.argmax(r.probabilities)) for r in readings)


@pytest.fixture
def files(tmp_path, digits):
    """A photo of a 7 and a square of noise, as PNG files."""
    return save(photo(digits[0][0], seed=0), tmp_path / "seven.png"), save(
        non_digits("noise", 1)[0], tmp_path / "noise.png"
    )


def test_mnist_predict_says_not_a_digit_on_stderr_and_exits_1(small_model, files, capsys):
    seven, noise = files
    status, out, err = run(capsys, seven, noise, "--model", small_model)
    assert status == 1
    assert len(out) == 1 and out[0].startswith(f"{seven}: 7 (")
    assert len(err) == 1 and err[0].startswith(f"error: {noise}: not a digit (the best guess, "), err
    assert "--accept-all" in err[0]


def test_mnist_predict_json_gives_digit_null_and_the_error(small_model, files, capsys):
    seven, noise = files
    status, out, err = run(capsys, seven, noise, "--json", "--model", small_model)
    first, second = (json.loads(line) for line in out)
    assert status == 1 and first["digit"] == 7 and first["error"] is None
    assert second["digit"] is None and second["error"] == NOT_A_DIGIT and len(second["probabilities"]) == 10
    assert second["confidence"] == max(second["probabilities"])


def test_mnist_predict_accept_all_reads_a_digit_in_every_image(small_model, files, capsys):
    status, out, err = run(capsys, *files, "--accept-all", "--model", small_model)
    assert (status, err, len(out)) == (0, [], 2)


def test_a_model_without_thresholds_reads_every_image_and_says_so(small_keras_model, files, tmp_path, capsys):
    import keras

    from digitlab.training.saving import export_onnx

    old = tmp_path / "old.onnx"
    export_onnx(keras.saving.load_model(small_keras_model), old)  # no metadata: as trained before thresholds
    status, out, err = run(capsys, *files, "--model", old)
    assert (status, len(out)) == (0, 2)
    assert err == [
        f'note: {old} carries no "not a digit" threshold for 5 views (it was trained before there was '
        "one), so every image gets a digit; `dvc repro train` trains one that has it"
    ]


def test_the_app_answers_200_with_not_a_digit_and_the_image_it_saw(small_model, files):
    seven, noise = files
    with TestClient(web.create_app(small_model)) as client:
        answer = post_file(client, noise.read_bytes())
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["digit"] is None and body["error"] == NOT_A_DIGIT and len(body["image"]) == 28
        assert post_file(client, seven.read_bytes()).json()["digit"] == 7
    with TestClient(web.create_app(small_model, accept_all=True)) as client:
        body = post_file(client, noise.read_bytes()).json()
        assert body["error"] is None and body["digit"] == int(np.argmax(body["probabilities"]))
