"""fusionedge.runtime: numpy + ONNX Runtime inference, no torch."""
