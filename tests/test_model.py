"""The CNN is built from params alone."""

import keras
import pytest

from digitlab.model import build_model
from tests.conftest import make_params


def model_params(**changes):
    """The model section of the tests' fixed params, with some keys changed."""
    return make_params({f"model.{key}": value for key, value in changes.items()}).model


def count(model, layer_type):
    return sum(isinstance(layer, layer_type) for layer in model.layers)


def test_default_model_maps_images_to_ten_probabilities():
    model = build_model(model_params())
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)


@pytest.mark.parametrize("filters, convs_per_block", [([8], 1), ([8, 16], 2), ([4, 8, 16], 1)])
def test_conv_layers_follow_params(filters, convs_per_block):
    model = build_model(model_params(conv_filters=filters, convs_per_block=convs_per_block, padding="same"))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [f for f in filters for _ in range(convs_per_block)]
    assert count(model, keras.layers.MaxPooling2D) == len(filters)


def test_batch_norm_switch():
    with_norm = build_model(model_params(batch_norm=True, conv_filters=[16, 32], convs_per_block=2, dense_units=128))
    without_norm = build_model(model_params(batch_norm=False))
    assert count(with_norm, keras.layers.BatchNormalization) == 5  # four convs and the dense layer
    assert count(without_norm, keras.layers.BatchNormalization) == 0
    assert all(layer.use_bias for layer in without_norm.layers if isinstance(layer, keras.layers.Conv2D))


def test_dense_layer_can_be_left_out_and_pooling_changed():
    model = build_model(model_params(dense_units=0, pooling="average", dropout=0.5))
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == 1 and dense[0].units == 10
    assert count(model, keras.layers.AveragePooling2D) == 2
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.5]


def test_parameter_count_of_a_known_configuration():
    # conv 3x3x1x8 + bias (80), flatten 13*13*8=1352 -> dense 10 (13530)
    model = build_model(model_params(conv_filters=[8], convs_per_block=1, batch_norm=False, dense_units=0))
    assert model.count_params() == 80 + 13530
