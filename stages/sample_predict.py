"""Stage 6, sample_predict: show what the model says about a few random test images.

Writes into OUTPUT_DIR:
  samples.png      each image titled with its true label, the prediction and the confidence;
                   wrong predictions framed and titled in red
  predictions.csv  index, true label, predicted label and confidence of the same images

The model is MODEL_PATH, the ONNX export (model.onnx) run by onnxruntime, as users run it.

Usage: python -m stages.sample_predict PREPARED_DIR MODEL_PATH(.onnx) OUTPUT_DIR
"""

import csv
import io

from digitlab.shared.command import stage_paths
from digitlab.shared.errors import run_command
from digitlab.shared.params import load_params

import numpy as np

from digitlab import figures
from digitlab.files.arrays import load_arrays
from digitlab.files.atomic import write_text
from digitlab.inference.onnx_model import load_onnx_model
from digitlab.inference.views import predict_probabilities


def main(argv: list[str] | None = None) -> None:
    args = stage_paths(__doc__, ["prepared_dir", "model_path", "output_dir"], argv)
    all_params = load_params()
    params, views = all_params.sample_predict, all_params.evaluate.tta_views  # predicted as evaluate predicts

    test = load_arrays(args.prepared_dir / "test.npz")
    model = load_onnx_model(args.model_path)
    rng = np.random.default_rng(params.seed)
    chosen = np.sort(rng.choice(len(test["labels"]), size=min(params.count, len(test["labels"])), replace=False))

    probabilities = predict_probabilities(model, test["images"][chosen], len(chosen), views)  # a few: one batch
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    labels = test["labels"][chosen]
    wrong = predicted != labels

    figures.image_grid(
        test["images"][chosen],
        [f"true {t}, pred {p}\n{c:.1%}" for t, p, c in zip(labels, predicted, confidence)],
        args.output_dir / "samples.png",
        f"Predictions on {len(chosen)} random test images ({int(wrong.sum())} wrong, in red)",
        wrong=wrong.tolist(),
    )
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["index", "true", "predicted", "confidence", "correct"])
    for index, t, p, c in zip(chosen, labels, predicted, confidence):
        writer.writerow([int(index), int(t), int(p), f"{c:.4f}", int(t == p)])
    write_text(args.output_dir / "predictions.csv", table.getvalue())
    print(f"  wrote {args.output_dir / 'predictions.csv'}")
    print(f"sample_predict: {int((~wrong).sum())} of {len(chosen)} right; figure and CSV in {args.output_dir}/")


if __name__ == "__main__":
    run_command(main)
