"""The CNN, built entirely from the `model` section of params.yaml.

  input 28x28x1
  -> for each entry of conv_filters: convs_per_block x [Conv2D -> (BatchNorm) -> activation], 2x2 pooling
  -> flatten -> (dense_units -> (BatchNorm) -> activation) -> dropout -> 10-way softmax
"""

import keras
from keras import layers

from digitlab.params import Model
from digitlab.prepared import CLASSES, IMAGE_SIZE


def build_model(params: Model, precision: str = "none", replicas: int = 1) -> keras.Model:
    """The CNN. With a mixed `precision` ("mixed_float16", "mixed_bfloat16") its layers compute in 16 bits,
    except the softmax output, which stays float32 so that the probabilities and the loss stay accurate.
    Trained on several `replicas`, batch normalisation uses the statistics of the global batch, so that
    every replica keeps the same running statistics and so the same model."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32" if precision == "none" else precision)
    try:
        return _build(params, synchronized=replicas > 1)
    finally:
        keras.config.set_dtype_policy(previous)


def _build(params: Model, synchronized: bool) -> keras.Model:
    # Without batch norm the convolutions need their own bias; with it, the norm's offset replaces it.
    use_bias = not params.batch_norm
    pooling = {"max": layers.MaxPooling2D, "average": layers.AveragePooling2D}[params.pooling]

    def normalise_and_activate(x):
        if params.batch_norm:
            x = layers.BatchNormalization(synchronized=synchronized)(x)
        return layers.Activation(params.activation)(x)

    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = inputs
    for filters in params.conv_filters:
        for _ in range(params.convs_per_block):
            x = layers.Conv2D(filters, params.kernel_size, padding=params.padding, use_bias=use_bias)(x)
            x = normalise_and_activate(x)
        x = pooling(pool_size=2)(x)

    x = layers.Flatten()(x)
    if params.dense_units:
        x = layers.Dense(params.dense_units, use_bias=use_bias)(x)
        x = normalise_and_activate(x)
    x = layers.Dropout(params.dropout)(x)
    outputs = layers.Dense(len(CLASSES), activation="softmax", name="digit", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")
