"""digitlab: the library beside `stages/`, one folder for each part. dvc.yaml makes each stage depend
on the folders it imports, so an edit re-runs exactly the stages that use it.

  shared/      what every stage reads: params.yaml validated (params), the prepared arrays' format
               (prepared), test-time views and predicting over them (views), "not a digit" thresholds
               (rejection), whole-file writes (atomic), one-line errors (errors)
  data/        the four official MNIST files: names, checksums, the IDX format; any image made to look like
               an MNIST digit (images); the non-digit images (nondigits)     (fetch, explore, preprocess)
  training/    the CNN (model), fitting it (fitting), several devices or machines (distribute)    (train)
  evaluation/  loading the model and predicting (prediction), scores and calibration (scores)
                                                                                (evaluate, sample_predict)
  figures/     the stages' PNG figures                                 (explore, evaluate, sample_predict)
  serving/     using the model on your own images: DigitReader, mnist-predict, mnist-app (no stage)
  review/      the pull-request report, `python -m digitlab.review.report` (CI, no stage)

This file holds no code: the stages do not depend on it, so editing this map re-runs nothing.
"""
