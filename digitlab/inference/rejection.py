""" "Not a digit": the confidence below which an image is refused, chosen by train and carried in model.onnx.

A softmax over ten digits must pick one, whatever it is shown. So the train stage also shows the model
images that hold no digit (digitlab/images/nondigits.py) with a flat target, a tenth for every digit
(outlier exposure, Hendrycks et al. 2019), and its confidence on such images, the largest of its ten
probabilities averaged over the test-time views, stays low. Train then chooses, for each number of
views, the confidence below which `reject.false_rejection` of the validation digits fall, and writes
these thresholds into model.onnx's metadata. The reader, mnist-predict, mnist-app and evaluate answer
"not a digit" for an image whose confidence is below the threshold for their number of views.
Why this method and not another: benchmarks/README.md, "Not a digit".
"""

import json

from digitlab.shared.errors import UserError

import numpy as np

from digitlab.inference.rounding import threshold_down

NOT_A_DIGIT = "not a digit"
METADATA_KEY = "not_a_digit_thresholds"  # in model.onnx: JSON, {"1": 0.93, "5": 0.91, "9": 0.90} by view count


def confidences(probabilities: np.ndarray) -> np.ndarray:
    """Each image's confidence: its largest class probability (what mnist-predict prints)."""
    return np.asarray(probabilities).max(axis=1)


def choose_threshold(digit_confidences: np.ndarray, false_rejection: float) -> float:
    """The confidence below which at most `false_rejection` of these digits' confidences lie (an image
    is refused when its confidence is below it, so ties with the threshold are accepted), rounded down
    to a precision that every CPU agrees on (digitlab/inference/rounding.py). 0 refuses nothing: no
    confidence is below 0, whatever images come later."""
    if false_rejection == 0:
        return 0.0
    return threshold_down(np.quantile(digit_confidences, false_rejection, method="lower"))


def rejected(image_confidences: np.ndarray, threshold: float) -> np.ndarray:
    """Which images are answered "not a digit"."""
    return np.asarray(image_confidences) < threshold


def thresholds_metadata(thresholds: dict[int, float]) -> dict[str, str]:
    """The ONNX metadata entry that carries the thresholds, by number of views."""
    return {METADATA_KEY: json.dumps({str(views): threshold for views, threshold in sorted(thresholds.items())})}


def thresholds_from_metadata(metadata: dict[str, str], source: str) -> dict[int, float]:
    """The thresholds an ONNX model carries, by number of views; {} for a model trained without them."""
    if METADATA_KEY not in metadata:
        return {}
    try:
        return {int(views): float(threshold) for views, threshold in json.loads(metadata[METADATA_KEY]).items()}
    except (ValueError, TypeError, AttributeError):
        raise UserError(f"{source}: its {METADATA_KEY} metadata is malformed; run `dvc repro --force train`") from None
