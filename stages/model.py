"""The CNN, built entirely from the `model` section of params.yaml.

  input 28x28x1
  -> for each entry of conv_filters: convs_per_block x [Conv2D -> (BatchNorm) -> activation], 2x2 pooling
  -> flatten -> (dense_units -> (BatchNorm) -> activation) -> dropout -> 10-way softmax
"""

import zipfile
from pathlib import Path

import keras
from keras import layers

from stages.errors import PipelineError
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


def load_model(path: str | Path) -> keras.Model:
    """Load a model written by the train stage; safe mode refuses embedded Python code."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"model file {path} not found; run `dvc repro train` to train it")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError) as error:
        raise PipelineError(
            f"{path} is not a readable Keras model ({type(error).__name__}); run `dvc repro --force train`"
        ) from error
