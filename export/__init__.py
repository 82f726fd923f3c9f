"""fusionedge.export: PyTorch -> one self-describing ONNX file."""
