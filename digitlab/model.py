"""The CNN, built entirely from the `model` section of params.yaml.

  input 28x28x1
  -> for each entry of conv_filters: convs_per_block x [Conv2D -> (BatchNorm) -> activation], 2x2 pooling
  -> flatten -> (dense_units -> (BatchNorm) -> activation) -> dropout -> 10-way softmax
"""

import keras
from keras import layers

from digitlab.params import Model
from digitlab.prepared import CLASSES, IMAGE_SIZE


def build_model(params: Model) -> keras.Model:
    # Without batch norm the convolutions need their own bias; with it, the norm's offset replaces it.
    use_bias = not params.batch_norm
    pooling = {"max": layers.MaxPooling2D, "average": layers.AveragePooling2D}[params.pooling]

    def normalise_and_activate(x):
        if params.batch_norm:
            x = layers.BatchNormalization()(x)
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
    outputs = layers.Dense(len(CLASSES), activation="softmax", name="digit")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")
