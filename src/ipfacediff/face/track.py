"""Per-frame face tracking: detect, keep the same face over time, align, fill gaps, smooth."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsio import atomic_path
from .align import align_transform, transform_points
from .detect import Face, FaceDetector, default_detector, select_face
from .smooth import fill_missing, gaussian_smooth, jitter, params_to_transforms, transforms_to_params


@dataclass
class Track:
    crop_size: int
    scale: float
    sigma: float
    face_index: int
    detected: np.ndarray  # (N,) bool: a face was found in this frame
    landmarks: np.ndarray  # (N, 5, 2) frame pixels, NaN where not detected
    boxes: np.ndarray  # (N, 4) xyxy, NaN where not detected
    scores: np.ndarray  # (N,), 0 where not detected
    raw: np.ndarray  # (N, 2, 3) per-frame frame->crop affines (gaps interpolated)
    smoothed: np.ndarray  # (N, 2, 3) temporally smoothed affines: use these to crop and paste

    @property
    def n_frames(self) -> int:
        return len(self.detected)

    @property
    def n_detected(self) -> int:
        return int(self.detected.sum())

    @property
    def n_interpolated(self) -> int:
        return self.n_frames - self.n_detected

    def jitter(self) -> dict[str, float]:
        """Crop shake (frame px, see smooth.jitter) before and after smoothing."""
        return {"raw": jitter(self.raw, self.crop_size), "smoothed": jitter(self.smoothed, self.crop_size)}

    def landmarks_in_crop(self, i: int) -> np.ndarray | None:
        """Frame i's detected landmarks in its (smoothed) crop, None where interpolated."""
        return transform_points(self.landmarks[i], self.smoothed[i]) if self.detected[i] else None

    def save(self, path: str | Path, **extra: np.ndarray) -> None:
        """Atomic .npz of every field, plus `extra` arrays (e.g. source frame indices, times)."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **extra, crop_size=self.crop_size, scale=self.scale, sigma=self.sigma, face_index=self.face_index,
                         detected=self.detected, landmarks=self.landmarks, boxes=self.boxes, scores=self.scores,
                         raw=self.raw, smoothed=self.smoothed)

    @classmethod
    def load(cls, path: str | Path) -> Track:
        try:
            z = np.load(path)
        except (OSError, ValueError) as e:
            raise InputError(path, f"not a track file ({e})") from e
        with z:
            return cls(int(z["crop_size"]), float(z["scale"]), float(z["sigma"]), int(z["face_index"]),
                       *(z[k] for k in ("detected", "landmarks", "boxes", "scores", "raw", "smoothed")))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _follow(faces: list[Face], prev: Face | None, face_index: int, min_face_px: float) -> Face | None:
    """The face overlapping the previous pick most (identity continuity), else the size-ranked pick."""
    big = [f for f in faces if f.size >= min_face_px]
    if prev is not None and big:
        best = max(big, key=lambda f: _iou(f.box, prev.box))
        if _iou(best.box, prev.box) >= 0.3:
            return best
    return select_face(big, face_index)


def track_video(
    frames: Iterable[np.ndarray],
    face_index: int = 0,
    min_face_px: float = 0.0,
    crop_size: int = 256,
    scale: float = 1.0,
    sigma: float = 2.0,
    detector: FaceDetector | None = None,
    path: str | Path | None = None,
    progress: bool = False,
) -> Track:
    """Track one face through `frames` (RGB uint8). Frames without it get transforms interpolated
    from their neighbours (counted in `n_interpolated`); no face in any frame raises InputError.
    """
    from tqdm import tqdm

    det = detector or default_detector()
    picks: list[Face | None] = []
    prev = None
    for frame in tqdm(frames, desc="track faces", unit="frame", disable=not progress, leave=False):
        face = _follow(det(frame), prev, face_index, min_face_px)
        picks.append(face)
        prev = face or prev
    n = len(picks)
    if n == 0:
        raise InputError(path, "no frames to track")
    detected = np.array([f is not None for f in picks])
    if not detected.any():
        what = f"face #{face_index} (0 = largest)" if face_index else "face"
        raise InputError(path, f"no {what} of at least {min_face_px:g} px found in any of {n} frames")
    nan = np.full((5, 2), np.nan)
    landmarks = np.stack([f.landmarks5 if f else nan for f in picks])
    boxes = np.stack([f.box if f else np.full(4, np.nan) for f in picks])
    scores = np.array([f.score if f else 0.0 for f in picks])
    params = np.zeros((n, 4))
    for i in np.flatnonzero(detected):
        params[i] = transforms_to_params(align_transform(landmarks[i], crop_size, scale), crop_size)[0]
    params = fill_missing(params, detected)
    raw = params_to_transforms(params, crop_size)
    smoothed = params_to_transforms(gaussian_smooth(params, sigma), crop_size)
    return Track(crop_size, float(scale), float(sigma), int(face_index), detected, landmarks, boxes, scores, raw, smoothed)
