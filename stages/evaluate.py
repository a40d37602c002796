"""Stage 5, evaluate: measure the trained model, once, on the 10,000 test images.

The model scored is MODEL_PATH, the ONNX export (model.onnx, run by onnxruntime: the model users run).
The Keras model beside it (model.keras) predicts the same images too, and the stage stops, writing no
metrics, if the two disagree on any answer or by more than PARITY_TOLERANCE on any probability.

Writes into REPORT_DIR:
  metrics.json                     test.accuracy, test.errors, test.loss, test.macro_f1, test.ece, then
                                   onnx.argmax_agreement and onnx.max_probability_difference (vs Keras)
  per_class.json                   precision, recall, F1 and support of each digit (rows, for DVC's bar plots)
  calibration.json                 mean confidence and accuracy per confidence bin (reliability diagram)
  speed.json                       inference images/s (a timing: differs from run to run)
  plots/sklearn/confusion_matrix.json  actual vs predicted, for DVC's confusion template
  confusion_matrix.png             the same matrix as a Seaborn heatmap
  mistakes.png                     the most confident mistakes: image, true and predicted label, confidence

Usage: python -m stages.evaluate PREPARED_DIR MODEL_PATH(.onnx) REPORT_DIR
"""

import argparse
import time
from pathlib import Path

import numpy as np
from dvclive import Live

from digitlab import figures
from digitlab.evaluation.prediction import load_model, load_onnx_model, parity, predict_probabilities
from digitlab.evaluation.scores import (
    confusion_matrix,
    cross_entropy,
    most_confident_mistakes,
    per_class_scores,
    reliability,
)
from digitlab.shared.atomic import write_json
from digitlab.shared.errors import run_stage
from digitlab.shared.params import load_params
from digitlab.shared.prepared import load_arrays


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("model_path", type=Path)
    parser.add_argument("report_dir", type=Path)
    args = parser.parse_args(argv)
    params = load_params().evaluate

    test = load_arrays(args.prepared_dir / "test.npz")
    model = load_onnx_model(args.model_path)
    keras_model = load_model(args.model_path.with_suffix(".keras"))
    labels = test["labels"].astype(np.int64)

    # A first small call builds the prediction graph, so the timing below is steady-state speed.
    predict_probabilities(model, test["images"][: params.batch_size], params.batch_size, params.tta_views)
    started = time.perf_counter()
    probabilities = predict_probabilities(model, test["images"], params.batch_size, params.tta_views)
    seconds = time.perf_counter() - started
    predicted = probabilities.argmax(axis=1)
    # The same images, views and batches through the Keras model: the ONNX file must be the same model.
    agreement = parity(probabilities, predict_probabilities(keras_model, test["images"], params.batch_size,
                                                            params.tta_views))

    matrix = confusion_matrix(labels, predicted)
    scores = per_class_scores(matrix)
    accuracy = float((predicted == labels).mean())
    calibration, ece = reliability(probabilities, labels, params.calibration_bins)
    with Live(str(args.report_dir), dvcyaml=None, save_dvc_exp=False) as live:
        # In the order `dvc exp show` gives the columns, the first two kept in full in a narrow terminal.
        live.log_metric("test/accuracy", round(accuracy, 6), plot=False)
        live.log_metric("test/errors", int((predicted != labels).sum()), plot=False)
        live.log_metric("test/loss", round(cross_entropy(probabilities, labels), 6), plot=False)
        # Macro precision and recall are left to per_class.json: on MNIST's balanced classes they add
        # little to accuracy and macro F1, and each metric is one more column in every `dvc exp show`.
        live.log_metric("test/macro_f1", round(float(np.mean([row["f1"] for row in scores])), 6), plot=False)
        live.log_metric("test/ece", round(ece, 6), plot=False)
        for name, value in agreement.items():  # last: how model.onnx agrees with model.keras
            live.log_metric(f"onnx/{name}", value, plot=False)
        live.log_sklearn_plot("confusion_matrix", labels, predicted, name="confusion_matrix.json")
    # Per-class scores are plots, not metrics: 30 more columns would crowd `dvc exp show` and `dvc metrics diff`.
    write_json(args.report_dir / "per_class.json", scores)
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
          f"{len(labels):,}), predicted at {len(labels) / seconds:,.0f} images/s by onnxruntime")
    print(f"evaluate: model.onnx agrees with model.keras on every answer, probabilities within "
          f"{agreement['max_probability_difference']:.3g}")
    print(f"evaluate: metrics and plots in {args.report_dir}/")


if __name__ == "__main__":
    run_stage(main)
