"""Benchmark: accuracy, speed and memory of the keras.io convnet, our default and our fast configuration.

Each configuration (ours with each of --seeds, keras.io's with its own seed) trains on data/prepared's arrays (run
`dvc repro preprocess` first) in its own process, so that its peak memory is its own. Measured: test accuracy
(predicted as the evaluate stage does), train wall time (model.fit only), time to 99.2% test accuracy (checked after
each epoch, never to choose a model), training and inference images/s, peak RSS, parameters; per configuration, the
mean accuracy over the seeds and the mean training time as a ratio to keras.io's. keras.io's convnet trains again
before each of our seeds, so that both are timed alike on a machine whose speed drifts. --set KEY=VALUE changes
params.yaml's values for our configurations, as `dvc exp run -S` does.

Usage: python benchmarks/benchmark.py [--configs keras_io default fast] [--seeds 42 43 44]
                                      [--set train.epochs=14 ...] [--output benchmarks/results]
Writes OUTPUT.json and OUTPUT.md and prints the Markdown.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import digitlab.shared  # noqa: F401  (sets TensorFlow's environment before the imports of keras below)

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The fast variant, as documented in benchmarks/README.md (each key a `dvc exp run -S key=value`):
# two epochs without augmentation (the default's shifts), which only pays off over longer training.
FAST_OVERRIDES = {
    "train.epochs": 2,
    "train.augment.shift_fraction": 0,
}
TARGET = 0.992


def keras_io_convnet(train, val, test_callback):
    """keras.io "Simple MNIST convnet", as published: 34,826 parameters, Adam, batch 128, 15 epochs."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    one_hot = keras.utils.to_categorical
    model.fit(
        train["images"],
        one_hot(train["labels"], 10),
        batch_size=128,
        epochs=15,
        validation_data=(val["images"], one_hot(val["labels"], 10)),
        callbacks=[test_callback],
        verbose=2,
    )
    return model, 15


def pipeline_model(params, train, val, test_callback):
    """Our train stage's model and training: the same `fit` that `dvc repro train` runs."""
    from digitlab.training.fitting import fit

    return fit(params, train, val, callbacks=[test_callback]), params.train.epochs


def measure(config: str, seed: int, settings: dict) -> dict:
    """Train one configuration in this process and return its figures."""
    from digitlab.shared.params import Params, load_params, with_overrides

    import keras

    from digitlab.files.arrays import load_arrays
    from digitlab.inference.views import predict_probabilities

    prepared = PROJECT_ROOT / "data" / "prepared"
    train, val, test = (load_arrays(prepared / f"{name}.npz") for name in ("train", "val", "test"))
    params = load_params(PROJECT_ROOT / "params.yaml")
    batch_size = params.evaluate.batch_size

    class TestAccuracyClock(keras.callbacks.Callback):
        """Times training alone and notes when test accuracy first reaches TARGET."""

        def __init__(self):
            super().__init__()
            self.train_seconds, self.time_to_target, self.curve = 0.0, None, []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.train_seconds += time.perf_counter() - self.started
            probabilities = predict_probabilities(self.model, test["images"], batch_size)
            accuracy = float((probabilities.argmax(axis=1) == test["labels"]).mean())
            self.curve.append(round(accuracy, 4))
            if self.time_to_target is None and accuracy >= TARGET:
                self.time_to_target = self.train_seconds

    clock = TestAccuracyClock()
    if config == "keras_io":
        model, epochs = keras_io_convnet(train, val, clock)
        views = 1
    else:
        overrides = {**settings, **(FAST_OVERRIDES if config == "fast" else {}), "seed": seed}
        params = Params.model_validate(with_overrides(params.model_dump(), overrides))
        model, epochs = pipeline_model(params, train, val, clock)
        views = params.evaluate.tta_views

    predict_probabilities(model, test["images"][:batch_size], batch_size, views)  # builds the prediction graph
    started = time.perf_counter()
    probabilities = predict_probabilities(model, test["images"], batch_size, views)
    inference_seconds = time.perf_counter() - started
    return {
        "config": config,
        "seed": seed,
        "views": views,
        "test_accuracy": round(float((probabilities.argmax(axis=1) == test["labels"]).mean()), 4),
        "train_seconds": round(clock.train_seconds, 1),
        "time_to_99.2_seconds": None if clock.time_to_target is None else round(clock.time_to_target, 1),
        "train_images_per_second": round(epochs * len(train["labels"]) / clock.train_seconds),
        "inference_images_per_second": round(len(test["labels"]) / inference_seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "parameters": model.count_params(),
        "epochs": epochs,
        "test_accuracy_per_epoch": clock.curve,
    }


def summary(results: list[dict]) -> list[dict]:
    """Per configuration: mean test accuracy over its seeds, mean training time and its ratio to keras.io's mean."""
    keras_io = [r["train_seconds"] for r in results if r["config"] == "keras_io"]
    baseline = sum(keras_io) / len(keras_io) if keras_io else None
    rows = []
    for config in dict.fromkeys(r["config"] for r in results):
        runs = [r for r in results if r["config"] == config]
        seconds = sum(r["train_seconds"] for r in runs) / len(runs)
        rows.append(
            {
                "config": config,
                "seeds": [r["seed"] for r in runs],
                "mean_test_accuracy": round(sum(r["test_accuracy"] for r in runs) / len(runs), 5),
                "mean_train_seconds": round(seconds, 1),
                "train_time_vs_keras_io": round(seconds / baseline, 2) if baseline else None,
            }
        )
    return rows


def markdown(results: list[dict], means: list[dict], machine: str, settings: dict) -> str:
    changed = ", ".join(f"`{key}={value}`" for key, value in settings.items())
    rows = [
        f"Measured {time.strftime('%Y-%m-%d')} on {machine}" + (f"; params.yaml with {changed}." if changed else "."),
        "",
        "| configuration | seed | test accuracy (views) | train wall time | time to 99.2% | train images/s "
        "| inference images/s | peak RSS | parameters |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        reached = "not reached" if r["time_to_99.2_seconds"] is None else f"{r['time_to_99.2_seconds']:.0f} s"
        rows.append(
            f"| {r['config']} ({r['epochs']} epochs) | {r['seed']} | {r['test_accuracy']:.2%} ({r['views']}) "
            f"| {r['train_seconds']:.0f} s | {reached} | {r['train_images_per_second']:,} "
            f"| {r['inference_images_per_second']:,} | {r['peak_rss_mb']:,} MB | {r['parameters']:,} |"
        )
    rows += [
        "",
        "| configuration | seeds | mean test accuracy | mean train wall time | vs keras.io |",
        "|---|---|---|---|---|",
    ]
    for m in means:
        ratio = "" if m["train_time_vs_keras_io"] is None else f"{m['train_time_vs_keras_io']:.2f}x"
        seeds = ", ".join(map(str, dict.fromkeys(m["seeds"])))
        if len(set(m["seeds"])) < len(m["seeds"]):
            seeds += f" ({len(m['seeds'])} runs)"
        rows.append(
            f"| {m['config']} | {seeds} | {m['mean_test_accuracy']:.2%} | {m['mean_train_seconds']:.0f} s | {ratio} |"
        )
    return "\n".join(rows) + "\n"


def machine_description() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return f"{model}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", default=["keras_io", "default", "fast"], choices=["keras_io", "default", "fast"]
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[42, 43, 44],
        help="seeds of our configurations (keras.io's is its own, 0)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="params.yaml values for our configurations, e.g. train.epochs=14",
    )
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}

    if args.child:  # one configuration and seed, in its own process
        print(json.dumps(measure(args.child[0], int(args.child[1]), settings)))
        return

    from digitlab.shared.params import Params, load_params, with_overrides

    Params.model_validate(
        with_overrides(load_params(PROJECT_ROOT / "params.yaml").model_dump(), settings)
    )  # fail now, not after hours
    ours = [config for config in args.configs if config != "keras_io"]
    keras_io_run = [("keras_io", 0)] if "keras_io" in args.configs else []
    runs = [run for seed in args.seeds for run in keras_io_run + [(config, seed) for config in ours]]
    results = []
    for config, seed in runs:
        print(f"benchmark: training {config}, seed {seed} ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--child", config, str(seed), *(["--set", *args.set] if args.set else [])]
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"benchmark: {json.dumps(results[-1])}", file=sys.stderr, flush=True)

    machine = machine_description()
    means = summary(results)
    table = markdown(results, means, machine, settings)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "settings": settings, "results": results, "means": means}, indent=2) + "\n"
    )
    args.output.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
