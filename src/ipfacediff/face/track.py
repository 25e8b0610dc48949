"""Per-frame face tracking: detect, keep the same face over time, align, fill gaps, smooth."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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


@dataclass
class FaceChoice:
    """Which face to edit when several are present.

    - `index` (default 0): the `index`-th largest face where tracking starts, then followed by overlap
      (and re-picked by size rank when lost);
    - `largest=True`: the person whose face is largest over the whole clip (summed box area), so a
      passer-by who is briefly closer to the camera does not win;
    - `reference` + `embed`: the person whose face matches a reference embedding best (mean cosine
      similarity over up to `samples_per_track` detections); `embed(frame, landmarks5)` returns a
      unit-norm embedding with the same recogniser. Below `min_similarity` nothing matches.
    """

    index: int = 0
    largest: bool = False
    reference: np.ndarray | None = None
    embed: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    min_similarity: float = -1.0
    samples_per_track: int = 5
    chosen: dict = field(default_factory=dict)  # filled in: how the face was chosen (for the record)

    @property
    def by_track(self) -> bool:
        return self.largest or self.reference is not None

    def describe(self) -> str:
        if self.reference is not None:
            return "face matching the reference photo"
        return "largest face" if self.largest else (f"face #{self.index} (0 = largest)" if self.index else "face")


@dataclass
class _Candidate:
    """One person followed through the clip by box overlap (see `_link`)."""

    faces: dict[int, Face] = field(default_factory=dict)  # frame index -> face
    similarities: list[float] = field(default_factory=list)

    @property
    def last(self) -> Face:
        return self.faces[max(self.faces)]


def _link(tracks: list[_Candidate], faces: list[Face], i: int, choice: FaceChoice, frame: np.ndarray) -> None:
    """Give each face of frame i to the track it overlaps most (IoU >= 0.3, greedy by overlap), or a new track."""
    pairs = sorted(((_iou(f.box, t.last.box), fi, ti) for fi, f in enumerate(faces) for ti, t in enumerate(tracks)
                    if max(t.faces) >= i - 5), reverse=True)  # a track lost for > 5 frames is closed
    used_f, used_t = set(), set()
    for iou, fi, ti in pairs:
        if iou < 0.3 or fi in used_f or ti in used_t:
            continue
        tracks[ti].faces[i] = faces[fi]
        used_f.add(fi)
        used_t.add(ti)
    for fi, f in enumerate(faces):
        if fi not in used_f:
            tracks.append(_Candidate({i: f}))
    if choice.reference is not None and choice.embed is not None:
        for t in tracks:
            if i in t.faces and len(t.similarities) < choice.samples_per_track:
                t.similarities.append(float(np.dot(choice.embed(frame, t.faces[i].landmarks5), choice.reference)))


def _pick_track(tracks: list[_Candidate], choice: FaceChoice, n: int) -> list[Face | None]:
    if not tracks:
        return [None] * n
    if choice.reference is not None:
        scores = [float(np.mean(t.similarities)) if t.similarities else -1.0 for t in tracks]
        best = int(np.argmax(scores))
        choice.chosen = {"by": "reference", "similarity": round(scores[best], 4), "tracks": len(tracks),
                         "similarities": [round(v, 4) for v in scores]}
        if scores[best] < choice.min_similarity:
            return [None] * n
    else:
        areas = [sum(f.area for f in t.faces.values()) for t in tracks]
        best = int(np.argmax(areas))
        choice.chosen = {"by": "largest", "tracks": len(tracks), "frames": len(tracks[best].faces)}
    return [tracks[best].faces.get(i) for i in range(n)]


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
    choice: FaceChoice | None = None,
) -> Track:
    """Track one face through `frames` (RGB uint8). Frames without it get transforms interpolated
    from their neighbours (counted in `n_interpolated`); no face in any frame raises InputError.
    `choice` picks the face when several are present (default: `face_index`, see FaceChoice).
    """
    from tqdm import tqdm

    choice = choice or FaceChoice(index=face_index)
    det = detector or default_detector()
    picks: list[Face | None] = []
    tracks: list[_Candidate] = []
    prev = None
    for i, frame in enumerate(tqdm(frames, desc="track faces", unit="frame", disable=not progress, leave=False)):
        faces = [f for f in det(frame) if f.size >= min_face_px]
        if choice.by_track:
            _link(tracks, faces, i, choice, frame)
            picks.append(None)
            continue
        face = _follow(faces, prev, choice.index, min_face_px)
        picks.append(face)
        prev = face or prev
    n = len(picks)
    if n == 0:
        raise InputError(path, "no frames to track")
    if choice.by_track:
        picks = _pick_track(tracks, choice, n)
    detected = np.array([f is not None for f in picks])
    if not detected.any():
        if choice.reference is not None and tracks:
            raise InputError(path, f"no face matches the reference photo (best cosine similarity "
                                   f"{choice.chosen.get('similarity')} < {choice.min_similarity:g}) in any of {n} frames")
        raise InputError(path, f"no {choice.describe()} of at least {min_face_px:g} px found in any of {n} frames")
    return _track_from_picks(picks, detected, crop_size, scale, sigma, choice.index)


def _track_from_picks(picks: list[Face | None], detected: np.ndarray, crop_size: int, scale: float, sigma: float,
                      face_index: int) -> Track:
    n = len(picks)
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
