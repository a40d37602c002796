"""Fitting the CNN: seeding, augmented batches, the optimizer and its schedule, and `fit` itself.

`fit` is what the train stage runs and what benchmarks/benchmark.py times, so both train
the same way, on one device or many (digitlab/training/distribute.py). The model is chosen on the
validation split only; the test set is not read here.
"""

import math
import re
import time

from digitlab.shared.errors import UserError
from digitlab.shared.mnist import CLASSES
from digitlab.shared.params import Augment, Params, Train

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from digitlab.inference.rounding import share, significant
from digitlab.inference.views import PREDICT_BATCH
from digitlab.training import distribute
from digitlab.training.model import build_model


def make_reproducible(seed: int) -> None:
    """Same params and seed, same machine: same weights and metrics."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class ElasticDistortion(layers.Layer):
    """Elastic distortion (Simard, Steinkraus and Platt, 2003): every pixel moves by a random field,
    uniform in [-1, 1], smoothed by a Gaussian of `sigma` pixels and scaled by `alpha`; the image is
    sampled there bilinearly, with background (0) beyond its edges. Like handwriting that wobbles.
    (keras.layers.RandomElasticTransform draws the same noise for both directions and one scale
    per batch, so it is not used.)"""

    def __init__(self, alpha: float, sigma: float, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.alpha = alpha
        self.seed_generator = keras.random.SeedGenerator(seed)
        radius = math.ceil(3 * sigma)
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        self.taps = (taps / taps.sum()).astype(np.float32)

    def call(self, images, training=True):
        if not training:
            return images
        batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
        field = keras.random.uniform((batch, height, width, 2), -1.0, 1.0, seed=self.seed_generator)
        for kernel in (self.taps[:, None], self.taps[None, :]):  # a Gaussian blur is two 1-D blurs
            kernel = np.tile(kernel[:, :, None, None], (1, 1, 2, 1))
            field = tf.nn.depthwise_conv2d(field, kernel, strides=[1, 1, 1, 1], padding="SAME")
        rows, columns = tf.meshgrid(
            tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
        )
        # Coordinates in the image padded by one background pixel, kept inside it.
        y = tf.clip_by_value(rows + self.alpha * field[..., 0] + 1, 0, height + 1 - 1e-3)
        x = tf.clip_by_value(columns + self.alpha * field[..., 1] + 1, 0, width + 1 - 1e-3)
        padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
        top, left = tf.floor(y), tf.floor(x)
        down, right = (y - top)[..., None], (x - left)[..., None]
        image_index = tf.broadcast_to(tf.range(batch)[:, None, None], tf.shape(y))
        top, left = tf.cast(top, tf.int32), tf.cast(left, tf.int32)

        def at(row, column):
            return tf.gather_nd(padded, tf.stack([image_index, row, column], axis=-1))

        upper = at(top, left) * (1 - right) + at(top, left + 1) * right
        lower = at(top + 1, left) * (1 - right) + at(top + 1, left + 1) * right
        return upper * (1 - down) + lower * down


class StrokeWidth(layers.Layer):
    """Thinner or bolder strokes, as pens and hands differ: each image is blended towards its grey erosion
    (thinner) or grey dilation (bolder) over 3x3 pixels, by a random share in [-amount, amount]; at 1 a
    stroke loses or gains a whole pixel on each side. (Keras has no such layer; its pooling does the work.)"""

    def __init__(self, amount: float, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.amount = amount
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        share = keras.random.uniform(
            (tf.shape(images)[0], 1, 1, 1), -self.amount, self.amount, seed=self.seed_generator
        )
        bolder = tf.nn.max_pool2d(images, 3, 1, "SAME")
        thinner = -tf.nn.max_pool2d(-images, 3, 1, "SAME")
        return images + tf.where(share > 0, share * (bolder - images), -share * (thinner - images))


def augmentation(augment: Augment, seed: int) -> keras.Sequential | None:
    """Keras preprocessing layers that distort each training batch a little; None if all are off."""
    distortions = []
    if augment.stroke_width:
        distortions.append(StrokeWidth(augment.stroke_width, seed=seed + 4))
    if augment.shear:
        distortions.append(layers.RandomShear(x_factor=augment.shear, fill_mode="constant", seed=seed + 5))
    if augment.elastic_alpha:
        distortions.append(ElasticDistortion(augment.elastic_alpha, augment.elastic_sigma, seed=seed + 3))
    if augment.rotation_degrees:
        distortions.append(layers.RandomRotation(augment.rotation_degrees / 360, fill_mode="constant", seed=seed))
    if augment.shift_fraction:
        shift = augment.shift_fraction
        distortions.append(layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed + 1))
    if augment.zoom_fraction:
        distortions.append(layers.RandomZoom(augment.zoom_fraction, fill_mode="constant", seed=seed + 2))
    return keras.Sequential(distortions, name="augmentation") if distortions else None


def training_targets(arrays: dict, outliers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images, targets): the digits one-hot (so that label smoothing can apply), then the `outliers`,
    images holding no digit, with a flat target, a tenth for every class (outlier exposure,
    digitlab/inference/rejection.py); label smoothing leaves a flat target as it is."""
    one_hot = np.eye(len(CLASSES), dtype=np.float32)[arrays["labels"]]
    if outliers is None or not len(outliers):
        return arrays["images"], one_hot
    flat = np.full((len(outliers), len(CLASSES)), 1 / len(CLASSES), dtype=np.float32)
    return np.concatenate([arrays["images"], outliers]), np.concatenate([one_hot, flat])


def is_digit(targets: tf.Tensor) -> tf.Tensor:
    """1.0 for a digit's one-hot target, 0.0 for an outlier's flat one."""
    return tf.cast(tf.reduce_max(targets, axis=-1) > 0.5, tf.float32)


def loss_weights(targets: tf.Tensor, outlier_weight: float) -> tf.Tensor:
    """Each image's weight in the training loss: 1 for a digit, `outlier_weight` (reject.outlier_weight) for an
    outlier. Below 1, the flat answer pulls less on the shapes of digits that some non-digits share."""
    digit = is_digit(targets)
    return digit + outlier_weight * (1 - digit)


def training_batches(
    arrays: dict,
    batch_size: int,
    augment: Augment,
    seed: int,
    context: tf.distribute.InputContext | None = None,
    outliers: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Shuffled, augmented batches of images and targets (`training_targets`), the outliers mixed in.

    `batch_size` is the global batch; `context` says how many input pipelines (one per worker) and
    replicas share it. With more than one replica every replica gets the same number of full
    batches, since each step waits for all of them; the few images left over change every epoch.
    """
    context = context or tf.distribute.InputContext()
    images, targets = training_targets(arrays, outliers)
    batches = tf.data.Dataset.from_tensor_slices((images, targets))
    # The same seed on every worker gives every worker the same order, so their shards never overlap.
    batches = batches.shuffle(len(targets), seed=seed, reshuffle_each_iteration=True)
    replicas = context.num_replicas_in_sync
    if replicas > 1:
        batches = batches.take(len(targets) // batch_size * batch_size)
        batches = batches.shard(context.num_input_pipelines, context.input_pipeline_id)
    batches = batches.batch(context.get_per_replica_batch_size(batch_size), drop_remainder=replicas > 1)
    distort = augmentation(augment, seed)
    if distort is not None:
        batches = batches.map(lambda x, y: (distort(x, training=True), y))
    return batches.prefetch(tf.data.AUTOTUNE)


def evaluation_batches(
    arrays: dict, batch_size: int, context: tf.distribute.InputContext | None = None
) -> tf.data.Dataset:
    """(image, one-hot, weight) batches of `batch_size` per replica. Padding images of weight 0 give
    every replica the same number of batches, so each image counts exactly once across the cluster."""
    context = context or tf.distribute.InputContext()
    count = len(arrays["labels"])
    padding = -count % (batch_size * context.num_replicas_in_sync)
    images = np.concatenate([arrays["images"], np.zeros((padding, *arrays["images"].shape[1:]), np.float32)])
    one_hot = np.eye(len(CLASSES), dtype=np.float32)[np.concatenate([arrays["labels"], np.zeros(padding, int)])]
    weights = np.concatenate([np.ones(count, np.float32), np.zeros(padding, np.float32)])
    batches = tf.data.Dataset.from_tensor_slices((images, one_hot, weights))
    return batches.shard(context.num_input_pipelines, context.input_pipeline_id).batch(batch_size)


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


def norm_momentum(steps: int) -> float:
    """Batch normalisation's momentum for a run of `steps` training steps.

    Inference normalises with running averages of the batch statistics, which start at 0 and 1.
    Keras's momentum, 0.99, averages about the last 100 steps: right for the default run (over
    10,000 steps), but a quick run of 150 steps would keep a quarter of the starting values, and one
    of 50 steps 60%, so its model, right on its training batches, read the test set at chance (11-23%).
    So the average spans at most the last tenth of the run; from 1,000 steps on it is Keras's 0.99.
    """
    return min(0.99, max(0.0, 1 - 10 / steps))


def make_optimizer(train: Train, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate = learning_rate(train, steps_per_epoch)
    weight_decay = train.weight_decay or None
    # Polyak averaging: the optimizer keeps a moving average of the weights beside them.
    averaging = {"use_ema": True, "ema_momentum": train.ema_momentum} if train.ema_momentum else {}
    return {
        "adam": lambda: keras.optimizers.Adam(rate, weight_decay=weight_decay, **averaging),
        "adamw": lambda: keras.optimizers.AdamW(rate, weight_decay=train.weight_decay, **averaging),
        "sgd": lambda: keras.optimizers.SGD(rate, momentum=0.9, nesterov=True, weight_decay=weight_decay, **averaging),
        "rmsprop": lambda: keras.optimizers.RMSprop(rate, weight_decay=weight_decay, **averaging),
    }[train.optimizer]()


def fit(
    params: Params,
    train: dict,
    val: dict,
    callbacks: list[keras.callbacks.Callback] = (),
    outliers: np.ndarray | None = None,
) -> keras.Model:
    """Train the CNN of `params` on the `train` arrays, measuring the `val` arrays after each epoch.
    `outliers`, images that hold no digit (preprocess's nondigits_train.npz), are mixed into the
    training batches with a flat target; the loss and accuracy logged are the digits' alone.

    One loop for every `train.distribute` setting: each replica computes the gradient of its share
    of the global batch (`compute_average_loss` scales it by the global batch size), the optimizer
    sums them across replicas, and every replica applies the same update. Keras callbacks (dvclive)
    get the same `logs` as from `model.fit`. Raises UserError if the loss becomes NaN.
    Seeding, batches, then the model: this order is part of what makes the same params and seed
    give the same weights.
    """
    config = params.train
    make_reproducible(params.seed)
    strategy = distribute.strategy_for(config.distribute)
    replicas = strategy.num_replicas_in_sync
    check_global_batch(config.batch_size, replicas)
    batches = strategy.distribute_datasets_from_function(
        lambda context: training_batches(train, config.batch_size, config.augment, params.seed, context, outliers)
    )
    val_batches = strategy.distribute_datasets_from_function(
        # Validation images per replica and step; no effect on the results.
        lambda context: evaluation_batches(val, PREDICT_BATCH, context)
    )
    outlier_count = 0 if outliers is None else len(outliers)
    steps_per_epoch = epoch_steps(len(train["labels"]) + outlier_count, config.batch_size, replicas)
    model, optimizer, momentum = training_model(strategy, params, steps_per_epoch)
    loss_function = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing, reduction=None)
    announce(model, strategy, config, len(train["labels"]), outlier_count, len(val["labels"]))
    steps = ReplicaSteps(strategy, model, optimizer, loss_function, params.reject.outlier_weight)
    callbacks = connected(callbacks, model, optimizer, config.ema_momentum)
    run_epochs(model, config, steps, batches, val_batches, callbacks)
    optimizer.finalize_variable_values(model.trainable_variables)  # the averaged weights, if train.ema_momentum
    notify(callbacks, "on_train_end")
    # The saved model is the same whatever the setting: float32, Keras's plain batch normalisation.
    return plain_copy(model, params, momentum)


def check_global_batch(batch_size: int, replicas: int) -> None:
    """Raises UserError unless the global batch splits equally over the replicas."""
    if batch_size % replicas:
        raise UserError(
            f"train.batch_size ({batch_size}) must be a multiple of the {replicas} replicas "
            "of train.distribute: it is the global batch, shared equally"
        )


def epoch_steps(images: int, batch_size: int, replicas: int) -> int:
    """Training steps in an epoch of `images`: with more than one replica, full batches only (training_batches)."""
    return images // batch_size if replicas > 1 else math.ceil(images / batch_size)


def training_model(
    strategy: tf.distribute.Strategy, params: Params, steps_per_epoch: int
) -> tuple[keras.Model, keras.optimizers.Optimizer, float]:
    """In `strategy`'s scope: the model to train, its optimizer built on its weights, and the batch
    normalisation momentum chosen for the run's length (norm_momentum)."""
    config = params.train
    with strategy.scope():
        momentum = norm_momentum(config.epochs * steps_per_epoch)
        model = build_model(
            params.model,
            config.mixed_precision,
            strategy.num_replicas_in_sync,
            for_training=True,
            norm_momentum=momentum,
        )
        optimizer = make_optimizer(config, steps_per_epoch)
        if config.mixed_precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)  # float16 gradients would underflow
        optimizer.build(model.trainable_variables)
    return model, optimizer, momentum


def announce(
    model: keras.Model, strategy: tf.distribute.Strategy, config: Train, digits: int, outliers: int, val_images: int
) -> None:
    """The training log's first line: what is trained, on what, and where."""
    print(
        f"train: {model.count_params():,} parameters, {digits:,} training digits and "
        f"{outliers:,} non-digits, {val_images:,} validation images, {config.epochs} epochs, "
        f"on {distribute.describe(strategy)}",
        flush=True,
    )


def totals(loss, probabilities, targets, weights):
    """On one replica: summed loss, correct predictions and images, each image counted by its weight."""
    correct = tf.cast(tf.argmax(probabilities, -1) == tf.argmax(targets, -1), tf.float32)
    return tf.reduce_sum(loss * weights), tf.reduce_sum(correct * weights), tf.reduce_sum(weights)


def summed_over_replicas(strategy: tf.distribute.Strategy, replica_step):
    """One step on every replica, as a graph, its totals summed over them."""

    @tf.function
    def step(*batch):
        return [strategy.reduce("SUM", value, axis=None) for value in strategy.run(replica_step, args=batch)]

    return step


class ReplicaSteps:
    """The training step and the validation step, each run on every replica of `strategy` as one graph
    (`train` and `validate`), their totals (`totals`) summed over the replicas."""

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        loss_function: keras.losses.Loss,
        outlier_weight: float,
    ):
        self.model = model
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.outlier_weight = outlier_weight
        self.train = summed_over_replicas(strategy, self.train_replica)
        self.validate = summed_over_replicas(strategy, self.validation_replica)

    def train_replica(self, images, targets):
        model, optimizer = self.model, self.optimizer
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            loss = self.loss_function(targets, probabilities)
            weighted = loss * loss_weights(targets, self.outlier_weight)
            scaled = optimizer.scale_loss(tf.nn.compute_average_loss(weighted))
        optimizer.apply(tape.gradient(scaled, model.trainable_variables), model.trainable_variables)
        return totals(loss, probabilities, targets, is_digit(targets))  # the digits' figures, as validation's

    def validation_replica(self, images, targets, weights):
        probabilities = self.model(images, training=False)
        return totals(self.loss_function(targets, probabilities), probabilities, targets, weights)


def epoch_mean(step, dataset) -> tuple[float, float]:
    """Mean loss and accuracy over a whole epoch of `dataset`, on every replica of every worker."""
    sums = np.zeros(3)
    for batch in dataset:
        sums += [value.numpy() for value in step(*batch)]
        if not math.isfinite(sums[0]):
            raise UserError(
                "training diverged (the loss became NaN); no model was written. "
                "Lower train.learning_rate or switch on model.batch_norm"
            )
    return sums[0] / sums[2], sums[1] / sums[2]


def connected(
    callbacks: list[keras.callbacks.Callback],
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    ema_momentum: float,
) -> list[keras.callbacks.Callback]:
    """The callbacks to call, each given the model."""
    if ema_momentum:
        # Validate on the averaged weights (Keras's callback swaps them in around each validation),
        # then keep them (finalize_variable_values in `fit`).
        model.optimizer = optimizer
        callbacks = [keras.callbacks.SwapEMAWeights(), *callbacks]
    for callback in callbacks:
        callback.set_model(model)
    return callbacks


def notify(callbacks: list[keras.callbacks.Callback], hook: str, *args) -> None:
    """Calls `hook` of each callback in turn. Not through keras.callbacks.CallbackList: its pythonify_logs
    has a bare `except:` that swallowed the SystemExit of a SIGTERM (digitlab/shared/errors.py) landing inside it."""
    for callback in callbacks:
        getattr(callback, hook)(*args)


def run_epochs(
    model: keras.Model,
    config: Train,
    steps: ReplicaSteps,
    batches: tf.distribute.DistributedDataset,
    val_batches: tf.distribute.DistributedDataset,
    callbacks: list[keras.callbacks.Callback],
) -> None:
    """`config.epochs` epochs, or fewer if a callback sets `model.stop_training`. Raises UserError if
    another worker of train.distribute multi_worker fails."""
    model.stop_training = False
    notify(callbacks, "on_train_begin")
    try:
        for epoch in range(config.epochs):
            started = time.perf_counter()
            logs = train_and_validate(epoch, steps, batches, val_batches, callbacks)
            print(
                f"epoch {epoch + 1}/{config.epochs}: {time.perf_counter() - started:.0f} s, "
                + ", ".join(f"{name} {value:.4f}" for name, value in logs.items()),
                flush=True,
            )
            notify(callbacks, "on_epoch_end", epoch, logs)
            if model.stop_training:  # set by a callback, such as keras.callbacks.EarlyStopping
                print(f"train: stopped after epoch {epoch + 1} by a callback", flush=True)
                break
    except tf.errors.OpError as error:
        if config.distribute != "multi_worker":
            raise
        raise worker_failure(error) from None


def train_and_validate(
    epoch: int,
    steps: ReplicaSteps,
    batches: tf.distribute.DistributedDataset,
    val_batches: tf.distribute.DistributedDataset,
    callbacks: list[keras.callbacks.Callback],
) -> dict[str, float]:
    """One epoch of training, then validation: the logs that Keras callbacks get."""
    notify(callbacks, "on_epoch_begin", epoch)
    loss, accuracy = epoch_mean(steps.train, batches)
    notify(callbacks, "on_test_begin")
    val_loss, val_accuracy = epoch_mean(steps.validate, val_batches)
    notify(callbacks, "on_test_end")
    # At the precision that every CPU agrees on: these go into tracked curves and metrics.
    return {
        "accuracy": share(accuracy),
        "loss": significant(loss),
        "val_accuracy": share(val_accuracy),
        "val_loss": significant(val_loss),
    }


def worker_failure(error: tf.errors.OpError) -> UserError:
    """The error to raise when another worker failed: the useful part of TensorFlow's message, e.g. "Error
    reported from /job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):
    /job:worker/replica:0/task:1"."""
    text = " ".join(error.message.split())
    found = re.search(r"Error reported from .*?(?= The tasks have crashed|$)", text)
    reason = found.group(0) if found else text[-200:]
    return UserError(
        f"training stopped because another worker failed or could not be reached ({reason}); "
        "no model was written. Start every worker again"
    )


def plain_copy(model: keras.Model, params: Params, momentum: float = 0.99) -> keras.Model:
    """The trained weights in a one-device float32 model of Keras's own layers, which loads anywhere.
    Mixed precision is for training (predicting in 16 bits on a CPU is slow, and the variables are
    float32 anyway); synchronised and fused batch normalisation are only for training."""
    copy = build_model(params.model, norm_momentum=momentum)
    copy.set_weights(model.get_weights())
    return copy
