"""Stage 4, train: fit the CNN described in params.yaml on the training split.

Each epoch, dvclive logs accuracy and loss on the training and validation splits
(`dvc plots show` draws them). The model is chosen on the validation split only;
the test set is not read here.

Writes MODEL_PATH (.keras), and into REPORT_DIR: metrics.json (final epoch and the
parameter count), plots/metrics/{train,eval}/*.tsv (per-epoch curves), model_summary.txt,
speed.json (training wall time and images/s: a timing, different on every run).

Usage: python -m stages.train PREPARED_DIR MODEL_PATH REPORT_DIR
"""

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from dvclive import Live  # noqa: E402
from dvclive.keras import DVCLiveCallback  # noqa: E402
from keras import layers  # noqa: E402

from stages.atomic import atomic_path, write_json, write_text  # noqa: E402
from stages.errors import PipelineError, run_stage  # noqa: E402
from stages.mnist import CLASSES, load_arrays  # noqa: E402
from stages.model import build_model  # noqa: E402
from stages.params import load_params  # noqa: E402


def make_reproducible(seed: int) -> None:
    """Same params and seed, same machine: same weights and metrics."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def augmentation(augment: dict, seed: int) -> keras.Sequential | None:
    """Keras preprocessing layers that distort each training batch a little; None if all are off."""
    distortions = []
    if augment["rotation_degrees"]:
        distortions.append(layers.RandomRotation(augment["rotation_degrees"] / 360, fill_mode="constant", seed=seed))
    if augment["shift_fraction"]:
        shift = augment["shift_fraction"]
        distortions.append(layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed + 1))
    if augment["zoom_fraction"]:
        distortions.append(layers.RandomZoom(augment["zoom_fraction"], fill_mode="constant", seed=seed + 2))
    return keras.Sequential(distortions, name="augmentation") if distortions else None


def training_batches(arrays: dict, batch_size: int, augment: dict, seed: int) -> tf.data.Dataset:
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


def learning_rate(train_params: dict, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The peak rate, reached after a linear warm-up, then held (constant) or decayed to zero (cosine)."""
    peak = train_params["learning_rate"]
    steps = train_params["epochs"] * steps_per_epoch
    warmup_steps = min(round(train_params["warmup_epochs"] * steps_per_epoch), steps - 1)
    if train_params["lr_schedule"] == "constant" and not warmup_steps:
        return peak
    # CosineDecay with alpha=1 never decays: a constant rate after its warm-up.
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else peak,
        decay_steps=steps - warmup_steps,
        alpha=1.0 if train_params["lr_schedule"] == "constant" else 0.0,
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def make_optimizer(train_params: dict, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate = learning_rate(train_params, steps_per_epoch)
    weight_decay = train_params["weight_decay"] or None
    return {
        "adam": lambda: keras.optimizers.Adam(rate, weight_decay=weight_decay),
        "adamw": lambda: keras.optimizers.AdamW(rate, weight_decay=train_params["weight_decay"]),
        "sgd": lambda: keras.optimizers.SGD(rate, momentum=0.9, nesterov=True, weight_decay=weight_decay),
        "rmsprop": lambda: keras.optimizers.RMSprop(rate, weight_decay=weight_decay),
    }[train_params["optimizer"]]()


def compiled_model(params: dict, train_count: int) -> keras.Model:
    """The CNN of params["model"], compiled with the optimizer, schedule and loss of params["train"]."""
    train_params = params["train"]
    steps_per_epoch = math.ceil(train_count / train_params["batch_size"])
    model = build_model(params["model"])
    model.compile(
        optimizer=make_optimizer(train_params, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train_params["label_smoothing"]),
        metrics=["accuracy"],
    )
    return model


def model_summary(model: keras.Model) -> str:
    lines = []
    model.summary(print_fn=lambda text, **_: lines.append(text))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("model_path", type=Path)
    parser.add_argument("report_dir", type=Path)
    args = parser.parse_args(argv)
    params = load_params()
    train_params = params["train"]

    make_reproducible(params["seed"])
    train = load_arrays(args.prepared_dir / "train.npz")
    val = load_arrays(args.prepared_dir / "val.npz")
    batches = training_batches(train, train_params["batch_size"], train_params["augment"], params["seed"])
    model = compiled_model(params, len(train["labels"]))
    summary = model_summary(model)  # before fit, so that optimizer variables are not counted
    print(f"train: {model.count_params():,} parameters, {len(train['labels']):,} training and "
          f"{len(val['labels']):,} validation images, {train_params['epochs']} epochs")

    started = time.perf_counter()
    with Live(str(args.report_dir), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_metric("model/params", model.count_params(), plot=False)
        history = model.fit(
            batches,
            epochs=train_params["epochs"],
            validation_data=evaluation_batches(val, 1000),
            callbacks=[keras.callbacks.TerminateOnNaN(), DVCLiveCallback(live=live)],
            shuffle=False,  # the dataset shuffles itself, seeded
            verbose=2,
        )
    seconds = time.perf_counter() - started
    if not all(math.isfinite(loss) for loss in history.history["loss"]):
        raise PipelineError(
            "training diverged (the loss became NaN); no model was written. "
            "Lower train.learning_rate or switch on model.batch_norm"
        )

    with atomic_path(args.model_path) as temporary:
        model.save(temporary)
    write_text(args.report_dir / "model_summary.txt", summary)
    # Timings differ from run to run, so they live apart from the reproducible metrics.json.
    images_per_second = train_params["epochs"] * len(train["labels"]) / seconds
    write_json(args.report_dir / "speed.json", {"train": {"seconds": round(seconds, 1),
                                                          "images_per_second": round(images_per_second)}})
    print(f"train: model in {args.model_path}, curves and metrics in {args.report_dir}/")


if __name__ == "__main__":
    run_stage(main)
