"""Stage 5, evaluate: measure the trained model, once, on the 10,000 test images.

Writes into REPORT_DIR:
  metrics.json                     test.accuracy, test.loss, test.errors, macro precision/recall/F1, test.ece
  per_class.json                   precision, recall, F1 and support of each digit (rows, for plots)
  per_class_metrics.json           the same scores as metrics: per_class.<digit>.{precision,recall,f1}
  calibration.json                 mean confidence and accuracy per confidence bin (reliability diagram)
  speed.json                       inference images/s (a timing: differs from run to run)
  plots/sklearn/confusion_matrix.json  actual vs predicted, for DVC's confusion template
  confusion_matrix.png             the same matrix as a Seaborn heatmap
  mistakes.png                     the most confident mistakes: image, true and predicted label, confidence

Usage: python -m stages.evaluate PREPARED_DIR MODEL_PATH REPORT_DIR
"""

import argparse
import time
from pathlib import Path

import numpy as np
from dvclive import Live

from digitlab import figures
from digitlab.atomic import write_json
from digitlab.errors import run_stage
from digitlab.params import load_params
from digitlab.prediction import load_model, predict_probabilities
from digitlab.prepared import load_arrays
from digitlab.scores import (
    confusion_matrix,
    cross_entropy,
    most_confident_mistakes,
    per_class_scores,
    reliability,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("model_path", type=Path)
    parser.add_argument("report_dir", type=Path)
    args = parser.parse_args(argv)
    params = load_params().evaluate

    test = load_arrays(args.prepared_dir / "test.npz")
    model = load_model(args.model_path)
    labels = test["labels"].astype(np.int64)

    # A first small call builds the prediction graph, so the timing below is steady-state speed.
    predict_probabilities(model, test["images"][: params.batch_size], params.batch_size, params.tta_views)
    started = time.perf_counter()
    probabilities = predict_probabilities(model, test["images"], params.batch_size, params.tta_views)
    seconds = time.perf_counter() - started
    predicted = probabilities.argmax(axis=1)

    matrix = confusion_matrix(labels, predicted)
    scores = per_class_scores(matrix)
    accuracy = float((predicted == labels).mean())
    calibration, ece = reliability(probabilities, labels, params.calibration_bins)
    with Live(str(args.report_dir), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_metric("test/accuracy", round(accuracy, 6), plot=False)
        live.log_metric("test/loss", round(cross_entropy(probabilities, labels), 6), plot=False)
        live.log_metric("test/errors", int((predicted != labels).sum()), plot=False)
        for score in ("precision", "recall", "f1"):
            macro = np.mean([row[score] for row in scores])
            live.log_metric(f"test/macro_{score}", round(float(macro), 6), plot=False)
        live.log_metric("test/ece", round(ece, 6), plot=False)
        live.log_sklearn_plot("confusion_matrix", labels, predicted, name="confusion_matrix.json")
    write_json(args.report_dir / "per_class.json", scores)  # rows, for DVC's bar plot
    write_json(args.report_dir / "per_class_metrics.json", {  # keys, for `dvc metrics diff`
        "per_class": {row["digit"]: {key: row[key] for key in ("precision", "recall", "f1")} for row in scores}
    })
    write_json(args.report_dir / "calibration.json", calibration)
    # Timings differ from run to run, so they live apart from the reproducible metrics above.
    write_json(args.report_dir / "speed.json", {"inference": {"images_per_second": round(len(labels) / seconds)}})
    figures.confusion_heatmap(matrix, args.report_dir / "confusion_matrix.png")
    mistakes = most_confident_mistakes(probabilities, labels, params.mistakes)
    figures.image_grid(
        test["images"][mistakes],
        [f"true {labels[i]}, pred {predicted[i]}\n#{i}, {probabilities[i].max():.1%}" for i in mistakes],
        args.report_dir / "mistakes.png",
        f"The {len(mistakes)} most confident mistakes on the test set",
        wrong=[True] * len(mistakes),
    )

    print(f"evaluate: test accuracy {accuracy:.2%} ({int(matrix.sum() - np.trace(matrix))} errors of "
          f"{len(labels):,}), predicted at {len(labels) / seconds:,.0f} images/s")
    print(f"evaluate: metrics and plots in {args.report_dir}/")


if __name__ == "__main__":
    run_stage(main)
