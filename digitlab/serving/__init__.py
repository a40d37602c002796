"""Using the trained model on your own images: no pipeline stage depends on this folder.

  images   an image of any kind -> the MNIST look (28x28, white on black, centred)
  reader   DigitReader: load the model once, read many images
  cli      mnist-predict
  app      mnist-app, the draw-a-digit page and its JSON endpoint (static/ holds the page)
"""

import digitlab.shared  # noqa: F401  (TensorFlow's and Matplotlib's settings, before either is imported)
