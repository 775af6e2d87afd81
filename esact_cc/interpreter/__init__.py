"""The reference interpreter: golden values at every IR level (onnx, transformer, quantized, spls)."""
