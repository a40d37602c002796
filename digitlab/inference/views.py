"""Test-time augmentation's views: the image itself, then copies shifted by one pixel; predicting over them.

A digit drawn a pixel off is still the same digit, so averaging the views' probabilities smooths out
the model's sensitivity to where exactly the strokes fall. The views are digitlab/shared/tta.py's; this is the
one way to predict over them: train (for its "not a digit" thresholds), evaluate and the reader all call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from digitlab.shared.tta import VIEWS

import numpy as np

if TYPE_CHECKING:
    import keras

# Images per prediction call wherever the pipeline predicts, evaluate's own evaluate.batch_size aside: no effect on
# the probabilities; a bound on memory.
PREDICT_BATCH = 500


def shifted(images: np.ndarray, down: int, right: int) -> np.ndarray:
    """`images` (N, H, W, C) moved by whole pixels, the background (0) coming in at the edges."""
    if not (down or right):
        return images
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return padded[:, 1 - down : 1 - down + height, 1 - right : 1 - right + width]


def predict_probabilities(
    model: keras.Model | Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int, views: int = 1
) -> np.ndarray:
    """Class probabilities of `images`, averaged over `views` (1, 5 or 9, see VIEWS), one call per batch:
    a Keras model's `predict_on_batch`, or `model` itself if it is a function from a batch of images to
    their probabilities (an OnnxModel), so that both are batched and shifted the same way.

    Not `model.predict`: timed over the test set, it now and then fell into a mode twice as slow,
    whatever the batch size; this loop gives the same probabilities to the bit and never did
    (benchmarks/README.md, "Inference").
    """
    predict = getattr(model, "predict_on_batch", model)  # a Keras model, or a function such as OnnxModel

    def probabilities(batch: np.ndarray) -> np.ndarray:
        # All the views of a batch in one call: fewer, larger calls are faster on a CPU.
        every_view = np.concatenate([shifted(batch, down, right) for down, right in VIEWS[views]])
        return np.asarray(predict(every_view)).reshape(views, len(batch), -1).mean(axis=0)

    return np.concatenate(
        [probabilities(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    )
