"""fusionedge.runtime: a fusionedge ONNX file in ONNX Runtime, numpy in and out, no torch.

cv2 is loaded when the first image is prepared, onnxruntime when a model is opened.
"""

from fusionedge.errors import MediaError
from fusionedge.runtime.model_file import ModelFileError
from fusionedge.runtime.predictor import Predictor, PredictorOptions
from fusionedge.runtime.providers import ProviderError
from fusionedge.runtime.result import NonFiniteError, Result

__all__ = [
    "MediaError",
    "ModelFileError",
    "NonFiniteError",
    "Predictor",
    "PredictorOptions",
    "ProviderError",
    "Result",
]
