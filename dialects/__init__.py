"""xDSL dialects of esact-cc: `onnx`, `transformer`, `spls`, `esact`."""
