"""What the metrics read: a clip = frames + timestamps, from a video file, a prepped folder
(`<vid>/crops/*.png` + `meta.json` fps), a folder of numbered PNG frames with a meta.json, or one
still image (a one-frame clip, for galleries of photos). Plus per-frame face landmarks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ..layout import CROPS, META

# Frames smaller than this (shorter side) are upscaled for detection only: YuNet misses faces that
# fill a small aligned crop (64 px sample crops) more often than at 4x.
DETECT_MIN_SIDE = 256


@dataclass
class Clip:
    name: str
    path: str
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    times: np.ndarray  # (N,) seconds from the first frame
    fps: Fraction | None  # None for a still
    stride: int = 1  # this clip keeps every `stride`-th frame of its file

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def key(self) -> str:
        """Cache key: the file and which of its frames."""
        return f"{self.path}@{self.stride}"

    def every(self, stride: int) -> Clip:
        """Every `stride`-th frame (timestamps kept, so pairing by time still holds)."""
        if stride < 1:
            raise InputError(None, f"frame stride must be >= 1, got {stride}")
        if stride == 1:
            return self
        fps = self.fps / stride if self.fps else None
        return Clip(self.name, self.path, self.frames[::stride], self.times[::stride], fps, self.stride * stride)

    @property
    def duration(self) -> float:
        """Time covered: last timestamp + one frame interval."""
        step = 1.0 / float(self.fps) if self.fps else 0.0
        return float(self.times[-1]) + step if len(self.times) else 0.0


@dataclass
class Faces:
    """Per-frame landmarks of the largest face; NaN rows where none was found."""

    landmarks: np.ndarray  # (N, 5, 2)
    found: np.ndarray = field(init=False)  # (N,) bool

    def __post_init__(self) -> None:
        self.found = ~np.isnan(self.landmarks).any(axis=(1, 2))

    @property
    def n_missing(self) -> int:
        return int((~self.found).sum())


def _fps_of(folder: Path) -> Fraction:
    for meta in (folder / META, folder.parent / META):
        if meta.is_file():
            try:
                return Fraction(str(json.loads(meta.read_text())["fps"]))
            except (ValueError, KeyError, json.JSONDecodeError, ZeroDivisionError) as e:
                raise InputError(meta, f"no valid 'fps' entry ({e})") from e
    raise InputError(folder, "frame folder without a meta.json giving its fps")


def _read_pngs(files: list[Path]) -> np.ndarray:
    from ..face.prep import read_image

    frames = [read_image(p) for p in files]
    if len({f.shape for f in frames}) > 1:
        raise InputError(files[0].parent, "frames of different sizes")
    return np.stack(frames)


def load_clip(path: str | Path, name: str | None = None) -> Clip:
    """A clip from a video file, a prepped/frames folder, or a still image; InputError otherwise."""
    from ..video import read_video

    path = Path(path)
    name = name or (path.stem if path.is_file() else path.name)
    if not path.exists():
        raise InputError(path, "not found")
    if path.is_dir():
        folder = path / CROPS if (path / CROPS).is_dir() else path
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(folder, "no frames (PNG/JPEG) in this folder")
        fps = _fps_of(folder)
        return Clip(name, str(path), _read_pngs(files), np.arange(len(files)) / float(fps), fps)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Clip(name, str(path), _read_pngs([path]), np.zeros(1), None)
    if suffix in VIDEO_SUFFIXES:
        v = read_video(path)
        return Clip(name, str(path), v.frames, np.asarray(v.times, np.float64), v.fps)
    raise InputError(path, f"not a video ({', '.join(sorted(VIDEO_SUFFIXES))}), image or frame folder")


def detect_landmarks(frames: np.ndarray, progress: bool = False) -> Faces:
    """Landmarks of the largest face in each frame (YuNet via ipfacediff.face); small frames are
    upscaled by an integer factor for detection and the points scaled back."""
    import cv2
    from tqdm import tqdm

    from ..face import detect_faces

    out = np.full((len(frames), 5, 2), np.nan)
    for i, frame in enumerate(tqdm(frames, desc="detect faces", unit="frame", disable=not progress, leave=False)):
        k = max(1, math.ceil(DETECT_MIN_SIDE / min(frame.shape[:2])))
        big = cv2.resize(frame, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC) if k > 1 else frame
        faces = detect_faces(big)
        if faces:
            # k * x + (k - 1) / 2 maps pixel centres under cv2.resize; invert it.
            out[i] = (faces[0].landmarks5 - (k - 1) / 2.0) / k
    return Faces(out)


# Pairing two clips of (possibly) different length or fps: by timestamp, never by index alone.
MIN_OVERLAP = 0.5


@dataclass
class Pairing:
    """Edit frame i is paired with source frame `source_index[i]`; unpaired edit frames are -1."""

    source_index: np.ndarray  # (N_edit,) int, -1 = no source frame at that time
    n_source_unpaired: int  # source frames no edit frame maps to

    @property
    def edit_index(self) -> np.ndarray:
        return np.flatnonzero(self.source_index >= 0)

    @property
    def n_edit_unpaired(self) -> int:
        return int((self.source_index < 0).sum())


def pair_by_time(source: Clip, edit: Clip) -> Pairing:
    """Pair each edit frame with the source frame nearest in time (an exact midpoint goes to the
    earlier one), if the edit frame's time lies within the source's span [0, last time + one source
    frame interval). Frame k of a clip is shown at `times[k]` (k / fps for frame folders). Overlap
    below MIN_OVERLAP of the longer clip -> InputError (not the same clip); otherwise the excess
    frames are counted, reported and excluded.
    """
    ts, te = np.asarray(source.times, np.float64), np.asarray(edit.times, np.float64)
    if len(ts) == 0 or len(te) == 0:
        raise InputError(edit.path if len(te) == 0 else source.path, "no frames")
    longer, shorter = max(source.duration, edit.duration), min(source.duration, edit.duration)
    if longer > 0 and shorter / longer < MIN_OVERLAP:
        raise InputError(edit.path, f"{edit.duration:.3f} s long but the original {source.path} is "
                         f"{source.duration:.3f} s: less than {MIN_OVERLAP:.0%} overlap, not the same clip?")
    end = source.duration if source.fps else float(ts[-1]) + 0.5  # a still covers half a second either way
    j = np.clip(np.searchsorted(ts, te), 1, max(len(ts) - 1, 1)) if len(ts) > 1 else np.zeros(len(te), np.int64)
    if len(ts) > 1:
        j = np.where(np.abs(te - ts[j - 1]) <= np.abs(ts[j] - te) + 1e-9, j - 1, j)  # midpoint -> earlier
    ok = (te >= float(ts[0]) - 1e-6) & (te < end - 1e-6)
    idx = np.where(ok, j, -1).astype(np.int64)
    used = np.zeros(len(ts), bool)
    used[idx[idx >= 0]] = True
    return Pairing(idx, int((~used).sum()))
