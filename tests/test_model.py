"""The CNN is built from params alone."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw

from digitlab.evaluation.corruptions import corrupt
from digitlab.training.model import FusedBatchNormalization, RemoveBackground, build_model
from digitlab.training.saving import load_model
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


@pytest.mark.parametrize("shape", [(16, 6, 6, 3), (8, 5)], ids=["after a convolution", "after the dense layer"])
def test_fused_batch_norm_trains_exactly_like_keras_batch_norm(shape):
    """Same output, same gradients, same running statistics as Keras's layer, in training and inference."""
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(2.0, 3.0, shape), tf.float32)
    upstream = tf.constant(rng.normal(size=shape), tf.float32)  # a loss that weighs every output differently
    plain, fused = keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)
    for layer in (plain, fused):
        layer.build(shape)
    starting_weights = [rng.normal(1.0, 0.5, shape[-1]).astype(np.float32) for _ in range(4)]
    starting_weights[3] = np.abs(starting_weights[3])  # a variance
    results = []
    for layer in (plain, fused):
        layer.set_weights(starting_weights)
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images, training=True)
            loss = tf.reduce_sum(outputs * upstream)
        gradients = tape.gradient(loss, [images, layer.gamma, layer.beta])
        results.append([outputs, *gradients, *layer.non_trainable_weights, layer(images, training=False)])
    for keras_value, fused_value in zip(*results):
        np.testing.assert_allclose(np.asarray(fused_value), np.asarray(keras_value), rtol=1e-4, atol=1e-5)


def test_only_a_model_for_training_uses_the_fused_batch_norm():
    params = model_params(batch_norm=True, conv_filters=[16, 32], convs_per_block=2, dense_units=128)
    assert count(build_model(params, for_training=True), FusedBatchNormalization) == 5
    assert count(build_model(params), FusedBatchNormalization) == 0
    # Several replicas normalise with the global batch's statistics, which the fused kernel cannot.
    synchronised = build_model(params, replicas=2, for_training=True)
    assert count(synchronised, FusedBatchNormalization) == 0
    assert all(
        layer.synchronized for layer in synchronised.layers if isinstance(layer, keras.layers.BatchNormalization)
    )


def test_every_build_of_the_same_params_names_its_layers_alike():
    """The saved model is a copy of the one trained (training.plain_copy): the same names, not conv2d_5."""
    params = model_params()
    builds = [
        build_model(params),
        build_model(params),
        build_model(params, for_training=True),
        build_model(params, replicas=2, for_training=True),
    ]
    names = [[layer.name for layer in model.layers] for model in builds]
    assert names[0] == names[1] == names[2] == names[3]
    assert names[0][1:5] == ["remove_background", "block1_conv1", "block1_conv1_norm", "block1_conv1_relu"]


def test_fused_batch_norm_leaves_masks_renorm_and_any_axis_but_the_last_to_keras():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(4, 3, 5, 5)), tf.float32)  # channels first
    plain, fused = keras.layers.BatchNormalization(axis=1), FusedBatchNormalization(axis=1)
    np.testing.assert_allclose(
        np.asarray(fused(images, training=True)), np.asarray(plain(images, training=True)), rtol=1e-5, atol=1e-5
    )
    sequences, mask = tf.constant(rng.normal(size=(4, 6, 3)), tf.float32), tf.constant(rng.random((4, 6)) > 0.5)
    plain, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    np.testing.assert_allclose(
        np.asarray(fused(sequences, training=True, mask=mask)),
        np.asarray(plain(sequences, training=True, mask=mask)),
        rtol=1e-5,
        atol=1e-5,
    )
    images = tf.constant(rng.normal(2.0, 3.0, size=(8, 5, 5, 3)), tf.float32)
    plain, fused = keras.layers.BatchNormalization(renorm=True), FusedBatchNormalization(renorm=True)
    for layer in (plain, fused):  # renormalisation corrects the batch's statistics towards the running ones
        layer.build(images.shape)
        layer.renorm_mean.assign([1.0, -1.0, 0.5])
    np.testing.assert_allclose(
        np.asarray(fused(images, training=True)), np.asarray(plain(images, training=True)), rtol=1e-5, atol=1e-5
    )


def seven() -> np.ndarray:
    """A 7 as MNIST writes it: white strokes 3 pixels wide on black, as (1, 28, 28, 1) in [0, 1]."""
    image = Image.new("L", (28, 28))
    ImageDraw.Draw(image).line([(7, 7), (20, 7), (11, 22)], fill=255, width=3)
    return np.asarray(image, np.float32)[None, :, :, None] / 255


def test_removing_the_background_leaves_a_digit_on_black_paper_as_it_is():
    np.testing.assert_allclose(np.asarray(RemoveBackground(9)(seven())), seven(), atol=1e-6)


@pytest.mark.parametrize("corruption", ["brightness", "fog", "stripe"])
def test_removing_the_background_takes_away_grey_paper_fog_and_bands_of_light(corruption):
    """MNIST-C's three corruptions of the paper rather than the digit (evaluation/corruptions.py)."""
    corrupted = corrupt(seven(), corruption, seed=0)
    cleaned = np.asarray(RemoveBackground(9)(corrupted))
    assert np.abs(cleaned - seven()).mean() < np.abs(corrupted - seven()).mean() / 4
    assert cleaned[seven() == 1].mean() > 0.9  # the strokes keep their full brightness
    assert np.abs(cleaned - seven())[seven() == 0].max() < 0.5  # no shade of the background is left as ink


def test_removing_the_background_leaves_a_blank_page_blank_and_a_faint_texture_faint():
    blank = np.zeros((1, 28, 28, 1), np.float32)
    np.testing.assert_array_equal(np.asarray(RemoveBackground(9)(blank)), blank)
    faint = np.random.default_rng(0).random((1, 28, 28, 1)).astype(np.float32) * 0.02
    assert np.asarray(RemoveBackground(9)(faint)).max() <= 0.02 / 0.05 + 1e-6  # not stretched to look like ink


def test_the_background_window_is_a_param_and_the_saved_model_keeps_it(tmp_path):
    assert count(build_model(model_params(background_window=0)), RemoveBackground) == 0
    model = build_model(model_params(background_window=11))
    [layer] = [layer for layer in model.layers if isinstance(layer, RemoveBackground)]
    assert layer.window == 11
    model.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    foggy = corrupt(seven(), "fog", seed=0)
    np.testing.assert_allclose(loaded.predict(foggy, verbose=0), model.predict(foggy, verbose=0), atol=1e-6)
    assert loaded.get_layer("remove_background").window == 11


@pytest.mark.parametrize("window", [3, 9, 11, 27])
def test_removing_the_background_opens_the_image_exactly_as_square_pooling_would(window):
    """Its opening, from pads, slices and elementwise min and max, is bit for bit the opening by one
    square max pooling (the window centred, the image's edge ignored): the layer was pooling until
    tf2onnx's export of it proved unstable, and the model it trains must not change. An opening never
    rises above the image, so the result is ink in [0, 1]."""
    rng = np.random.default_rng(window)
    images = np.concatenate([rng.random((4, 28, 28, 1)), rng.integers(0, 4, (4, 28, 28, 1)) / 3]).astype(np.float32)

    def square_max(x):
        return keras.ops.max_pool(x, window, strides=1, padding="same")

    opened = np.asarray(square_max(-square_max(-images)))
    ink = images - opened
    expected = ink / np.maximum(ink.max(axis=(1, 2, 3), keepdims=True), np.float32(0.05))
    np.testing.assert_array_equal(np.asarray(RemoveBackground(window)(images)), expected)
    assert expected.min() >= 0 and expected.max() <= 1


@pytest.mark.parametrize("window", [0, 1, 2, 8])
def test_the_background_layer_refuses_what_params_refuse(window):
    # One rule (is_background_window): a window of 1 opens the image to itself and takes every stroke away.
    with pytest.raises(ValueError, match=f"odd width of at least 3, got {window}"):
        RemoveBackground(window)
