"""The CNN, built entirely from the `model` section of params.yaml.

  input 28x28x1
  -> for each entry of conv_filters: convs_per_block x [Conv2D -> (BatchNorm) -> activation], 2x2 pooling
  -> flatten -> (dense_units -> (BatchNorm) -> activation) -> dropout -> 10-way softmax
"""

import keras
from keras import layers

from stages.mnist import CLASSES, IMAGE_SIZE


def build_model(model_params: dict) -> keras.Model:
    # Without batch norm the convolutions need their own bias; with it, the norm's offset replaces it.
    use_bias = not model_params["batch_norm"]
    pooling = {"max": layers.MaxPooling2D, "average": layers.AveragePooling2D}[model_params["pooling"]]

    def normalise_and_activate(x):
        if model_params["batch_norm"]:
            x = layers.BatchNormalization()(x)
        return layers.Activation(model_params["activation"])(x)

    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = inputs
    for filters in model_params["conv_filters"]:
        for _ in range(model_params["convs_per_block"]):
            x = layers.Conv2D(
                filters, model_params["kernel_size"], padding=model_params["padding"], use_bias=use_bias
            )(x)
            x = normalise_and_activate(x)
        x = pooling(pool_size=2)(x)

    x = layers.Flatten()(x)
    if model_params["dense_units"]:
        x = layers.Dense(model_params["dense_units"], use_bias=use_bias)(x)
        x = normalise_and_activate(x)
    x = layers.Dropout(model_params["dropout"])(x)
    outputs = layers.Dense(len(CLASSES), activation="softmax", name="digit")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")
