"""Using a trained model: loading its file fails clearly, and batched prediction matches Keras's own."""

from digitlab.shared.errors import UserError

import numpy as np
import pytest

from digitlab.inference.views import VIEWS, predict_probabilities, shifted
from digitlab.training.model import build_model
from digitlab.training.saving import load_model
from tests.test_model import model_params


def test_saved_model_loads_back(tmp_path):
    model = build_model(model_params())
    model.save(tmp_path / "model.keras")
    assert load_model(tmp_path / "model.keras").count_params() == model.count_params()


def test_missing_model_file_is_reported(tmp_path):
    with pytest.raises(UserError, match="not found; run `dvc repro train`"):
        load_model(tmp_path / "model.keras")


def test_file_that_is_not_a_keras_model_is_reported(tmp_path):
    (tmp_path / "model.keras").write_text("not a model")
    with pytest.raises(UserError, match="is not a readable Keras model"):
        load_model(tmp_path / "model.keras")


def test_predict_probabilities_matches_model_predict_with_an_uneven_last_batch():
    model = build_model(model_params(conv_filters=[4], convs_per_block=1, dense_units=8))
    images = np.random.default_rng(0).random((25, 28, 28, 1), dtype=np.float32)
    probabilities = predict_probabilities(model, images, batch_size=10)
    assert probabilities.shape == (25, 10)
    np.testing.assert_allclose(probabilities, model.predict(images, batch_size=10, verbose=0), atol=1e-6)


def test_shifted_moves_whole_pixels_and_brings_in_background():
    images = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 1) + 1
    down = shifted(images, 1, 0)
    np.testing.assert_array_equal(down[:, 1:], images[:, :-1])
    assert (down[:, 0] == 0).all()
    left = shifted(images, 0, -1)
    np.testing.assert_array_equal(left[:, :, :-1], images[:, :, 1:])
    assert (left[:, :, -1] == 0).all()
    assert shifted(images, 0, 0) is images


@pytest.mark.parametrize("views", [5, 9])
def test_test_time_augmentation_averages_the_image_and_its_shifts(views):
    model = build_model(model_params(conv_filters=[4], convs_per_block=1, dense_units=8))
    images = np.random.default_rng(0).random((7, 28, 28, 1), dtype=np.float32)
    expected = np.mean([model.predict_on_batch(shifted(images, down, right)) for down, right in VIEWS[views]], axis=0)
    assert len(set(VIEWS[views])) == views and VIEWS[views][0] == (0, 0)
    np.testing.assert_allclose(predict_probabilities(model, images, batch_size=3, views=views), expected, atol=1e-6)
    # One view is the plain prediction, to the bit.
    np.testing.assert_array_equal(
        predict_probabilities(model, images, batch_size=7, views=1), model.predict_on_batch(images)
    )
