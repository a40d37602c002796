"""Using model.onnx: loading it with onnxruntime (onnx_model), predicting over the test-time views
(views), and its "not a digit" thresholds (rejection). Train, evaluate, sample_predict and
digitlab/serving depend on this folder; nothing in it imports TensorFlow."""
