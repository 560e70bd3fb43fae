"""Inference on trained checkpoints and exported models: evaluation (1-crop, 10-crop, confusion), prediction on
image files, and the backends that run a checkpoint or an ONNX file (eager, compiled, onnxruntime)."""
