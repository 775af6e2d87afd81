"""ONNX in: reading, validating and importing models into the `onnx` dialect, and exporting host regions back to ONNX."""
