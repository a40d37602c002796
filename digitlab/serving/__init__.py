"""Using the trained model on your own images: no pipeline stage depends on this folder.

  reader    DigitReader: load the model once, read many images
  cli       mnist-predict
  app       mnist-app: the draw-a-digit app put together, and its command line
  page      the page's files (static/), their ETags and their routes
  upload    an upload to POST /predict read from the request, its image prepared
  limits    what the app takes on: bytes, pixels and time per upload, uploads at once
  batcher   the images of requests that arrive together, predicted in one model call
  options   what mnist-predict and mnist-app share: --views, --accept-all, the no-threshold note,
            onnxruntime's start-up warnings hidden

An image of any kind is turned into the MNIST look (28x28, white on black, centred) by
digitlab/images/mnist_look.py, and the ONNX model is loaded and run by digitlab/inference/; neither
imports TensorFlow, and nothing here does.
"""

import digitlab.shared  # noqa: F401  (Matplotlib's settings, for mnist-predict --show, before it is imported)
