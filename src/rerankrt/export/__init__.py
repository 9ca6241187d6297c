"""ONNX export of the reference models (FP32 and strongly typed FP16 graphs) and their validation."""
