"""Deployment: an ArchSpec with its trained weights as a runnable ONNX model, checked with onnxruntime."""
