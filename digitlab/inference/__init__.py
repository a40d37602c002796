"""Using model.onnx: loading it with onnxruntime (onnx_model), predicting over the test-time views (views),
its "not a digit" thresholds (rejection), and how many digits of its numbers are written (rounding). Nothing in
it imports TensorFlow."""
