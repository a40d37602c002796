"""Fitting the CNN: seeding, augmented batches, the optimizer and its schedule, and `fit` itself.

`fit` is what the train stage runs and what benchmarks/benchmark.py times, so both train
the same way. The model is chosen on the validation split only; the test set is not read here.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from digitlab.errors import PipelineError
from digitlab.model import build_model
from digitlab.params import Augment, Params, Train
from digitlab.prepared import CLASSES


def make_reproducible(seed: int) -> None:
    """Same params and seed, same machine: same weights and metrics."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def augmentation(augment: Augment, seed: int) -> keras.Sequential | None:
    """Keras preprocessing layers that distort each training batch a little; None if all are off."""
    distortions = []
    if augment.rotation_degrees:
        distortions.append(layers.RandomRotation(augment.rotation_degrees / 360, fill_mode="constant", seed=seed))
    if augment.shift_fraction:
        shift = augment.shift_fraction
        distortions.append(layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed + 1))
    if augment.zoom_fraction:
        distortions.append(layers.RandomZoom(augment.zoom_fraction, fill_mode="constant", seed=seed + 2))
    return keras.Sequential(distortions, name="augmentation") if distortions else None


def training_batches(arrays: dict, batch_size: int, augment: Augment, seed: int) -> tf.data.Dataset:
    """Shuffled, augmented, one-hot batches (one-hot so that label smoothing can apply)."""
    one_hot = np.eye(len(CLASSES), dtype=np.float32)[arrays["labels"]]
    batches = (
        tf.data.Dataset.from_tensor_slices((arrays["images"], one_hot))
        .shuffle(len(one_hot), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )
    distort = augmentation(augment, seed)
    if distort is not None:
        batches = batches.map(lambda x, y: (distort(x, training=True), y))
    return batches.prefetch(tf.data.AUTOTUNE)


def evaluation_batches(arrays: dict, batch_size: int) -> tf.data.Dataset:
    one_hot = np.eye(len(CLASSES), dtype=np.float32)[arrays["labels"]]
    return tf.data.Dataset.from_tensor_slices((arrays["images"], one_hot)).batch(batch_size)


def learning_rate(train: Train, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The peak rate, reached after a linear warm-up, then held (constant) or decayed to zero (cosine)."""
    steps = train.epochs * steps_per_epoch
    warmup_steps = min(round(train.warmup_epochs * steps_per_epoch), steps - 1)
    if train.lr_schedule == "constant" and not warmup_steps:
        return train.learning_rate
    # CosineDecay with alpha=1 never decays: a constant rate after its warm-up.
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else train.learning_rate,
        decay_steps=steps - warmup_steps,
        alpha=1.0 if train.lr_schedule == "constant" else 0.0,
        warmup_target=train.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def make_optimizer(train: Train, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate = learning_rate(train, steps_per_epoch)
    weight_decay = train.weight_decay or None
    return {
        "adam": lambda: keras.optimizers.Adam(rate, weight_decay=weight_decay),
        "adamw": lambda: keras.optimizers.AdamW(rate, weight_decay=train.weight_decay),
        "sgd": lambda: keras.optimizers.SGD(rate, momentum=0.9, nesterov=True, weight_decay=weight_decay),
        "rmsprop": lambda: keras.optimizers.RMSprop(rate, weight_decay=weight_decay),
    }[train.optimizer]()


def compiled_model(params: Params, train_count: int) -> keras.Model:
    """The CNN of params.model, compiled with the optimizer, schedule and loss of params.train."""
    steps_per_epoch = math.ceil(train_count / params.train.batch_size)
    model = build_model(params.model)
    model.compile(
        optimizer=make_optimizer(params.train, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.train.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def fit(params: Params, train: dict, val: dict, callbacks: list[keras.callbacks.Callback] = ()) -> keras.Model:
    """Train the CNN of `params` on the `train` arrays, measuring the `val` arrays after each epoch.

    Raises PipelineError if the loss becomes NaN. Seeding, batches, then the model: this order
    is part of what makes the same params and seed give the same weights.
    """
    make_reproducible(params.seed)
    batches = training_batches(train, params.train.batch_size, params.train.augment, params.seed)
    model = compiled_model(params, len(train["labels"]))
    print(f"train: {model.count_params():,} parameters, {len(train['labels']):,} training and "
          f"{len(val['labels']):,} validation images, {params.train.epochs} epochs", flush=True)
    history = model.fit(
        batches,
        epochs=params.train.epochs,
        validation_data=evaluation_batches(val, 1000),
        callbacks=[keras.callbacks.TerminateOnNaN(), *callbacks],
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=2,
    )
    if not all(math.isfinite(loss) for loss in history.history["loss"]):
        raise PipelineError("training diverged (the loss became NaN); no model was written. "
                            "Lower train.learning_rate or switch on model.batch_norm")
    return model
