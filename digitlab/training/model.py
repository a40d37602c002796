"""The CNN, built entirely from the `model` section of params.yaml.

input 28x28x1
-> (the background taken away: RemoveBackground, a white top-hat over background_window pixels)
-> for each entry of conv_filters: convs_per_block x [Conv2D -> (BatchNorm) -> activation], 2x2 pooling
-> flatten -> (dense_units -> (BatchNorm) -> activation) -> dropout -> 10-way softmax
"""

import functools

from digitlab.shared.mnist import CLASSES, IMAGE_SIZE
from digitlab.shared.params import Model, is_background_window

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops


def build_model(
    params: Model, precision: str = "none", replicas: int = 1, for_training: bool = False, norm_momentum: float = 0.99
) -> keras.Model:
    """The CNN. With a mixed `precision` ("mixed_float16", "mixed_bfloat16") its layers compute in 16 bits,
    except the softmax output, which stays float32 so that the probabilities and the loss stay accurate.
    Trained on several `replicas`, batch normalisation uses the statistics of the global batch, so that
    every replica keeps the same running statistics and so the same model. A model `for_training`
    normalises its batches with TensorFlow's fused kernel (FusedBatchNormalization); it has the same
    weights, and training.fit copies them into a plain model to save. `norm_momentum` is how much of
    its running statistics batch normalisation keeps at each step (Keras's 0.99; fitting.norm_momentum
    lowers it for short runs)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32" if precision == "none" else precision)
    if replicas > 1:
        normalisation = functools.partial(layers.BatchNormalization, synchronized=True, momentum=norm_momentum)
    else:
        kind = FusedBatchNormalization if for_training else layers.BatchNormalization
        normalisation = functools.partial(kind, momentum=norm_momentum)
    try:
        return _build(params, normalisation)
    finally:
        keras.config.set_dtype_policy(previous)


class FusedBatchNormalization(layers.BatchNormalization):
    """Keras's BatchNormalization, trained with TensorFlow's fused kernel: one op forward and one back
    where Keras computes the moments and the normalisation as separate ops, which on a CPU makes each
    training step markedly slower (benchmarks/README.md, "Fused batch normalisation, and what the time
    bought"). Same weights, same running statistics (the biased batch variance, as Keras keeps).
    Inference, masks, renormalisation and any axis but the last take Keras's own path."""

    def call(self, inputs, training=None, mask=None):
        fused = (
            training
            and self.trainable
            and self.center
            and self.scale
            and mask is None
            and not self.renorm
            and self.axis in (-1, inputs.shape.rank - 1)
        )
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        # The kernel takes NHWC images; a dense layer's (batch, units) is (batch, 1, 1, units).
        images = inputs if inputs.shape.rank == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
        normalised, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            images, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
        )[:3]
        count = tf.cast(tf.size(images) // channels, tf.float32)
        variance *= (count - 1) / count  # the kernel returns the unbiased variance
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.reshape(normalised, tf.shape(inputs))


# The least ink RemoveBackground stretches to full brightness: an image with less (blank, or a faint
# texture) stays faint instead of having its noise blown up to look like strokes.
LEAST_INK = 0.05


@keras.saving.register_keras_serializable(package="digitlab")
class RemoveBackground(layers.Layer):
    """Keeps the ink and takes away the paper: the image minus its grey opening over a `window` x `window`
    square (a white top-hat), stretched so that its brightest ink is 1. What is wider than the window in
    every direction (grey paper, fog, a shadow, a band of light along an edge) is background and goes;
    strokes narrower than it stay. MNIST's digits (black paper, strokes of 2-4 pixels, brightest pixel
    254 or 255) come through all but unchanged. No weights: the same arithmetic in training, in evaluate
    and in model.onnx."""

    def __init__(self, window: int, **kwargs):
        super().__init__(**kwargs)
        if window == 0 or not is_background_window(window):  # 0 is "no layer", which build_model decides
            raise ValueError(f"RemoveBackground's window must be an odd width of at least 3, got {window}")
        self.window = window

    def call(self, images):
        eroded = self._window_extreme(images, ops.minimum, never_picked=np.inf)
        opened = self._window_extreme(eroded, ops.maximum, never_picked=-np.inf)  # the grey opening
        ink = images - opened
        brightest = ops.max(ink, axis=(1, 2, 3), keepdims=True)
        return ink / ops.maximum(brightest, LEAST_INK)

    def _window_extreme(self, images, pick, never_picked: float):
        """The least (`pick` = minimum) or greatest (maximum) value in the window around each pixel, the
        window centred on it and the image's edge ignored (as "same" max pooling does): the image is
        padded with a value that is `never_picked`, then swept down its columns and along its rows.
        Built from one pad, slices and elementwise minimum/maximum, not pooling: tf2onnx wraps a pooling in
        layout transposes and then rewrote them differently from one export of the same weights to the
        next, and so model.onnx's bytes changed. The same values as pooling, bit for bit
        (tests/test_model.py): a min or a max is exact in any order."""
        half = self.window // 2
        padded = ops.pad(images, [[0, 0], [half, half], [half, half], [0, 0]], constant_values=never_picked)
        return self._sweep(self._sweep(padded, pick, axis=1), pick, axis=2)

    def _sweep(self, padded, pick, axis: int):
        """Along `axis`, the extreme of each run of `window` values: as many values as the image had, from
        the padded image. By doubling: after each step each position holds the extreme of the `span`
        values from it on, so a window of 9 takes 4 steps, not 8."""
        size = padded.shape[axis] - (self.window - 1)

        def run(values, start: int, length: int):
            index = [slice(None)] * 4
            index[axis] = slice(start, start + length)
            return values[tuple(index)]

        x, span = padded, 1
        while span * 2 <= self.window:
            length = x.shape[axis] - span
            x = pick(run(x, 0, length), run(x, span, length))
            span *= 2
        # A window is two runs of `span` values that overlap: its first and its last.
        return pick(run(x, 0, size), run(x, self.window - span, size))

    def get_config(self) -> dict:
        return {**super().get_config(), "window": self.window}


def _build(params: Model, normalisation) -> keras.Model:
    # Without batch norm the convolutions need their own bias; with it, the norm's offset replaces it.
    use_bias = not params.batch_norm
    pooling = {"max": layers.MaxPooling2D, "average": layers.AveragePooling2D}[params.pooling]

    # Layers are named for their place (block1_conv2, dense_norm), so that every model built from the
    # same params, for training or for saving, has the same names.
    def normalise_and_activate(x, place: str):
        if params.batch_norm:
            x = normalisation(name=f"{place}_norm")(x)
        return layers.Activation(params.activation, name=f"{place}_{params.activation}")(x)

    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = inputs
    if params.background_window:
        x = RemoveBackground(params.background_window, name="remove_background")(x)
    for block, filters in enumerate(params.conv_filters, start=1):
        for conv in range(1, params.convs_per_block + 1):
            place = f"block{block}_conv{conv}"
            x = layers.Conv2D(filters, params.kernel_size, padding=params.padding, use_bias=use_bias, name=place)(x)
            x = normalise_and_activate(x, place)
        x = pooling(pool_size=2, name=f"block{block}_pool")(x)

    x = layers.Flatten(name="flatten")(x)
    if params.dense_units:
        x = layers.Dense(params.dense_units, use_bias=use_bias, name="dense")(x)
        x = normalise_and_activate(x, "dense")
    x = layers.Dropout(params.dropout, name="dropout")(x)
    outputs = layers.Dense(len(CLASSES), activation="softmax", name="digit", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")
