"""Export of trained s2i models: ONNX bundles, FP16, TensorRT engines, Triton repositories."""
