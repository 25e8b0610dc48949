"""Paste-back masks in crop coordinates.

`face_mask`: the fixed feathered ellipse over the 5-point template (brows to chin): the fallback.
`RegionMasker`: a per-frame mask of what the prompt edits, from models that ship in a pip package
(mediapipe 0.10.21's .tflite files, run in TensorFlow Lite; see packaged.py for why not mediapipe
itself): region "face" = the hull of the 468-point face mesh (chin to hairline, cheek to cheek);
"face_hair" = that plus the person segmentation inside a head ellipse above the chin (hair, bangs).
Both are dilated, then feathered inwards with a smoothstep ramp, and are exactly 0 outside the
feathered band and on the outermost crop pixels, so paste-back leaves every other pixel bit-exact.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .align import crop, template

REGIONS = ("face", "face_hair", "ellipse")
# prompt categories (data/prompts/edits.yaml) whose edit reaches the hair
HAIR_CATEGORIES = {"hair_colour", "hair_style", "bangs", "age", "gender", "multiple", "accessories"}
# free-text prompts: words that put the hair in the edit
HAIR_WORDS = re.compile(r"\b(hair\w*|bang|bangs|fringe|bald\w*|blond\w*|brunette|ponytail|curl\w*|hat|cap|"
                        r"old|elderly|grey|gray|woman|man|girl|boy|wig|afro|braid\w*)\b", re.IGNORECASE)


def region_for_prompt(prompt: str, category: str | None = None) -> str:
    """'face_hair' when the edit reaches the hair (by prompt category, else by its words), else 'face'."""
    if category is not None:
        return "face_hair" if category in HAIR_CATEGORIES else "face"
    from ..prompts import load_edit_prompts

    try:
        by_target = {p.target.lower(): p.category for p in load_edit_prompts().values()}
    except InputError:
        by_target = {}
    cat = by_target.get(prompt.strip().lower())
    if cat is not None:
        return region_for_prompt(prompt, cat)
    return "face_hair" if HAIR_WORDS.search(prompt) else "face"


def face_ellipse(landmarks: np.ndarray) -> tuple[np.ndarray, tuple[float, float], float]:
    """(centre, (half-width, half-height), angle in degrees) of the face from 5 landmarks.

    Proportions fitted to the ArcFace template so the ellipse spans brows to chin, cheek to cheek.
    """
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    eyes, mouth = lm[:2].mean(0), lm[3:].mean(0)
    eye_vec = lm[1] - lm[0]
    eye_mouth = float(np.linalg.norm(mouth - eyes))
    angle = float(np.degrees(np.arctan2(eye_vec[1], eye_vec[0])))
    centre = eyes + 0.3 * (mouth - eyes)
    return centre, (1.15 * float(np.linalg.norm(eye_vec)), 1.3 * eye_mouth), angle


def feather(binary: np.ndarray, feather_px: float) -> np.ndarray:
    """(S, S) float32: smoothstep of the distance to the region's edge over `feather_px`, inside the
    region; exactly 0 outside it and on the outermost crop pixels (an inverse warp of the mask never
    reaches past the crop)."""
    import cv2

    b = (np.asarray(binary) > 0).astype(np.uint8)
    b[[0, -1], :] = 0
    b[:, [0, -1]] = 0
    dist = cv2.distanceTransform(b, cv2.DIST_L2, 5)
    x = np.clip(dist / max(1.0, float(feather_px)), 0.0, 1.0)
    return (x * x * (3 - 2 * x)).astype(np.float32)


def dilate(binary: np.ndarray, px: float) -> np.ndarray:
    import cv2

    r = round(px)
    if r <= 0:
        return binary
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(binary.astype(np.uint8), k)


def default_feather(crop_size: int) -> float:
    return max(1.0, crop_size / 16.0)


def face_mask(crop_size: int, landmarks_in_crop: np.ndarray | None = None, feather_px: float | None = None) -> np.ndarray:
    """(S, S) float32 in [0, 1]: 1 inside the face ellipse, a smoothstep ramp `feather_px` wide just
    inside its edge, exactly 0 outside it and on the outermost crop pixels. Landmarks default to the
    ArcFace template positions.
    """
    import cv2

    lm = template(crop_size) if landmarks_in_crop is None else landmarks_in_crop
    centre, axes, angle = face_ellipse(lm)
    shift = 4  # sub-pixel ellipse drawing
    binary = np.zeros((crop_size, crop_size), np.uint8)
    cv2.ellipse(binary, tuple(round(v * (1 << shift)) for v in centre),
                tuple(round(v * (1 << shift)) for v in axes), angle, 0, 360, 1, -1, cv2.LINE_8, shift)
    return feather(binary, default_feather(crop_size) if feather_px is None else feather_px)


# ------------------------------------------------------------------------------ face mesh + segmentation


def _zoom(M: np.ndarray, crop_size: int, out_size: int, zoom: float, dy: float = 0.0) -> np.ndarray:
    """Frame -> (out_size crop) affine: the edit crop of M zoomed out by `zoom` about its centre,
    shifted up by `dy` crop heights (room for hair)."""
    k = out_size / crop_size / zoom
    c = crop_size / 2.0
    A = np.array([[k, 0.0], [0.0, k]])
    t = np.array([out_size / 2.0 - k * c, out_size / 2.0 - k * (c - dy * crop_size)])
    return np.hstack([A @ M[:, :2], (A @ M[:, 2] + t)[:, None]])


class _Lite:
    """One TF Lite interpreter over a packaged .tflite (float input in [0, 1], NHWC)."""

    def __init__(self, entry):
        import warnings

        from ..packaged import locate

        path = locate(entry)
        from ..recognition.facenet_tf import (
            import_tensorflow,  # torchvision first: import order matters
        )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite's "moved to LiteRT" deprecation notice
            tf = import_tensorflow()
            self._it = tf.lite.Interpreter(model_path=str(path), num_threads=1)
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]
        self._out = self._it.get_output_details()
        self.size = int(self._in["shape"][1]), int(self._in["shape"][2])

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        x = (np.asarray(rgb, np.float32) / 255.0)[None]
        self._it.set_tensor(self._in["index"], x)
        self._it.invoke()
        return [self._it.get_tensor(o["index"]) for o in self._out]


_models = threading.local()


def _model(name: str):
    from .. import packaged

    m = getattr(_models, name, None)
    if m is None:
        m = _Lite(getattr(packaged, name))
        setattr(_models, name, m)
    return m


# MediaPipe's face-landmark ROI is the detector box enlarged 1.5x; the ArcFace crop is about that tight
# on the face, so the mesh sees the crop zoomed out a little (measured on the shared clips: the hull
# stays inside the input and the mesh's face-presence score is > 0.9).
MESH_ZOOM, MESH_DY = 1.25, 0.05
SEG_ZOOM, SEG_DY = 1.8, 0.15  # the segmenter sees the head with its hair and some background


@dataclass
class RegionMasker:
    """Per-frame paste-back masks (crop coordinates) of the edited region.

    region: face | face_hair | ellipse (the fixed template ellipse). dilate_px / feather_px are in crop
    pixels (default: crop_size / 32 and crop_size / 16).
    """

    crop_size: int
    region: str = "face"
    dilate_px: float | None = None
    feather_px: float | None = None
    min_presence: float = 0.5

    def __post_init__(self):
        if self.region not in REGIONS:
            raise InputError(None, f"mask region must be one of {', '.join(REGIONS)}, got {self.region!r}")
        for name in ("dilate_px", "feather_px"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise InputError(None, f"mask {name.replace('_px', '')} must be >= 0 px, got {v}")
        s = self.crop_size
        self.dilate_px = s / 32.0 if self.dilate_px is None else float(self.dilate_px)
        self.feather_px = default_feather(s) if self.feather_px is None else max(1.0, float(self.feather_px))
        self._fallback = face_mask(s, feather_px=self.feather_px)

    def face_hull(self, frame: np.ndarray, M: np.ndarray) -> np.ndarray | None:
        """(K, 2) convex hull of the face mesh in crop pixels, None when the mesh finds no face."""
        import cv2

        mesh = _model("FACE_MESH")
        Z = _zoom(M, self.crop_size, mesh.size[0], MESH_ZOOM, MESH_DY)
        pts, presence = mesh(crop(frame, Z, mesh.size[0]))
        if 1.0 / (1.0 + np.exp(-float(presence.ravel()[0]))) < self.min_presence:
            return None
        xy = pts.reshape(-1, 3)[:, :2].astype(np.float64)
        A = np.vstack([Z, [0, 0, 1]]) @ np.linalg.inv(np.vstack([M, [0, 0, 1]]))  # crop -> mesh input
        back = (xy - A[:2, 2]) @ np.linalg.inv(A[:2, :2]).T
        return cv2.convexHull(back.astype(np.float32)).reshape(-1, 2)

    def hair(self, frame: np.ndarray, M: np.ndarray, hull: np.ndarray) -> np.ndarray:
        """(S, S) uint8: person pixels inside a head ellipse around the face hull, above the chin."""
        import cv2

        seg = _model("SELFIE_SEGMENTATION")
        Z = _zoom(M, self.crop_size, seg.size[0], SEG_ZOOM, SEG_DY)
        prob = seg(crop(frame, Z, seg.size[0]))[0][0, :, :, 0]
        A = np.vstack([Z, [0, 0, 1]]) @ np.linalg.inv(np.vstack([M, [0, 0, 1]]))  # crop -> seg input
        s = self.crop_size
        person = cv2.warpAffine(prob.astype(np.float32), A[:2], (s, s), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        x0, y0 = hull.min(0)
        x1, y1 = hull.max(0)
        head = np.zeros((s, s), np.uint8)
        centre = ((x0 + x1) / 2.0, y0 + 0.35 * (y1 - y0))
        axes = (0.85 * (x1 - x0), 0.85 * (y1 - y0))
        cv2.ellipse(head, (round(centre[0]), round(centre[1])), (round(axes[0]), round(axes[1])),
                    0, 0, 360, 1, -1)
        head[int(np.ceil(y1)):] = 0  # not the neck or the clothes
        return ((person > 0.5) & (head > 0)).astype(np.uint8)

    def __call__(self, frame: np.ndarray, M: np.ndarray) -> np.ndarray:
        """(S, S) float32 mask of frame (RGB uint8) under the frame -> crop affine M."""
        import cv2

        if self.region == "ellipse":
            return self._fallback
        hull = self.face_hull(frame, M)
        if hull is None:  # the mesh lost the face: the template ellipse, never an empty paste
            return self._fallback
        s = self.crop_size
        binary = np.zeros((s, s), np.uint8)
        cv2.fillConvexPoly(binary, np.round(hull * 16).astype(np.int32), 1, cv2.LINE_8, 4)
        if self.region == "face_hair":
            binary |= self.hair(frame, M, hull)
        return feather(dilate(binary, self.dilate_px + self.feather_px), self.feather_px)

    def record(self) -> dict:
        return {"region": self.region, "dilate_px": self.dilate_px, "feather_px": self.feather_px,
                "models": "mediapipe 0.10.21 face mesh + selfie segmentation (TF Lite)" if self.region != "ellipse"
                else "5-point template ellipse"}


def smoothed_mask(folder, i: int, n: int, radius: int = 2) -> np.ndarray:
    """Frame i's paste-back mask: the mean of the masks write_mask stored in `folder` for frames
    i - radius .. i + radius (clipped to 0 .. n - 1). Per-frame segmentation flickers; the centred mean
    steadies it. Random access, so a resumed paste-back gives the same masks as an uninterrupted one; a
    pixel is 0 only where it is 0 in every mask averaged."""
    lo, hi = max(0, i - radius), min(n, i + radius + 1)
    return (np.sum([read_mask(mask_file(folder, j)) for j in range(lo, hi)], axis=0) / (hi - lo)).astype(np.float32)


MASK_LEVELS = 65535  # masks stored as 16-bit PNGs: 0 stays exactly 0, 1 exactly 1


def write_mask(path, mask: np.ndarray) -> None:
    """A 16-bit PNG that either exists complete or not at all (a resumed edit trusts existing masks)."""
    import cv2

    from ..fsio import atomic_path

    q = np.rint(np.clip(mask, 0.0, 1.0) * MASK_LEVELS).astype(np.uint16)
    ok, data = cv2.imencode(".png", q)
    if not ok:
        raise OSError(f"{path}: could not encode mask PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def mask_file(folder, i: int):
    from pathlib import Path

    return Path(folder) / f"{i:06d}.png"


def read_mask(path) -> np.ndarray:
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise OSError(f"{path}: missing or unreadable mask")
    return m.astype(np.float32) / MASK_LEVELS


def seam_ratio(frame: np.ndarray, alpha: np.ndarray, ring_px: int = 3, gap_px: int = 2) -> float:
    """How visible the paste-back boundary is in `frame` (the pasted result), given the full-frame
    paste weight `alpha` (H, W): mean gradient magnitude over the feathered band (0 < alpha < 1)
    divided by the larger of the means over the rings `ring_px` wide just inside (alpha == 1) and
    just outside (alpha == 0) it, `gap_px` away from the band (the 3x3 Sobel spreads a step 1 px
    either side; the gap keeps a seam's own gradient out of the sides it is compared with). A seam is
    a step along the band, so it makes the band busier than both sides (ratio above 1); a blend across
    the band does not (ratio about 1).
    """
    import cv2

    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) if frame.ndim == 3 else frame.astype(np.float32)
    mag = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
    band = (alpha > 0) & (alpha < 1)
    if not band.any():
        band = cv2.morphologyEx((alpha > 0).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0

    def grow(r: int) -> np.ndarray:
        return cv2.dilate(band.astype(np.uint8), np.ones((2 * r + 1,) * 2, np.uint8)) > 0

    ring = grow(gap_px + ring_px) & ~grow(gap_px)
    inner, outer = ring & (alpha >= 1), ring & (alpha <= 0)
    sides = [float(mag[r].mean()) for r in (inner, outer) if r.any()]
    return float(mag[band].mean() / max(max(sides), 1e-6))
