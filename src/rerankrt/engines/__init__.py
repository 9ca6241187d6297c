"""TensorRT engine building and inspection from the exported ONNX graphs."""
