"""Data preparation (prep_videos, prep_faces stages): aligned face crops of videos and images.

prep_videos, per video -> data/prepped/<vid>/ (atomic): crops/%06d.png, track.npz, meta.json.
prep_faces -> data/faces/ (atomic): images/<id>.png, index.csv, summary.json; images without a
usable face are skipped and listed, never dropped silently.
"""

from __future__ import annotations

import csv
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsio import atomic_dir, sha256_file, write_json
from ..media import DataConfig, celeba_hq_images
from ..video import as_fraction, fraction_str, iter_timed_frames, probe, resample_indices
from .align import align_transform, crop
from .detect import DETECTOR_NAME, as_rgb_uint8, detect_faces, select_face
from .track import Track, track_video
from ..layout import CROPS, META, is_prepped_video


def write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"{path}: could not write PNG")


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 image (grayscale expanded, alpha dropped, 16-bit scaled), or InputError."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if img is None:
        raise InputError(path, "not a readable image")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    if img.ndim == 3:
        img = img[:, :, 2::-1] if img.shape[2] >= 3 else img[:, :, :1]
    return as_rgb_uint8(img, str(path))


def read_source_video(path: Path, fps: Fraction | None, max_seconds: float | None):
    """(frames, source indices, times s, out fps, source info): resampled to `fps` by nearest frame
    on the exact grid k / fps, capped at `max_seconds`; decoding stops once past the cap."""
    info = probe(path)
    stop = None if max_seconds is None else float(max_seconds) + 2.0 / float(info.fps)
    times, frames = [], []
    for t, arr, _ in iter_timed_frames(path):
        if stop is not None and t > stop:
            break
        times.append(t)
        frames.append(arr)
    times_a = np.asarray(times)
    if fps is not None:
        idx = resample_indices(times_a, fps, max_seconds)
    else:
        keep = times_a < (float(max_seconds) - 1e-9 if max_seconds is not None else np.inf)
        idx = np.flatnonzero(keep) if keep.any() else np.array([0])
    out_fps = fps or info.fps
    return np.stack([frames[i] for i in idx]), idx, times_a[idx], out_fps, info


def prep_fingerprint(entry: dict, cfg: DataConfig, profile: str) -> str:
    """What determines one video's prepped folder: its bytes, the data settings, the detector."""
    import dataclasses
    import hashlib
    import json

    facts = {"sha256": entry.get("sha256") or sha256_file(entry["path"]), "file": entry["file"], "profile": profile,
             "cfg": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("videos", "clips", "stills")},
             "detector": DETECTOR_NAME, "identity": entry.get("identity")}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def _done_meta(vid_dir: Path, fingerprint: str) -> dict | None:
    """The meta of a complete prepped folder (written atomically) made with `fingerprint`, else None."""
    import json

    try:
        meta = json.loads((vid_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("fingerprint") == fingerprint else None


def prep_video(entry: dict, out_root: Path, cfg: DataConfig, profile: str) -> dict:
    """Track, smooth and crop one manifest video into out_root/<id>/ atomically; return its meta.
    A folder already made from the same bytes and settings is kept (an interrupted stage resumes
    at the first video not done)."""
    path, vid = Path(entry["path"]), entry["id"]
    fingerprint = prep_fingerprint(entry, cfg, profile)
    done = _done_meta(out_root / vid, fingerprint)
    if done is not None:
        return done
    fps = as_fraction(cfg.fps) if cfg.fps is not None else None
    frames, idx, times, out_fps, info = read_source_video(path, fps, cfg.max_seconds)
    track = track_video(frames, face_index=cfg.face_index, min_face_px=cfg.min_face_px, crop_size=cfg.crop_size,
                        scale=cfg.crop_scale, sigma=cfg.smooth_sigma, path=path)
    jit = track.jitter()
    with atomic_dir(out_root / vid) as tmp:
        (tmp / CROPS).mkdir()
        for i, frame in enumerate(frames):
            write_png(tmp / CROPS / f"{i:06d}.png", crop(frame, track.smoothed[i], cfg.crop_size))
        track.save(tmp / "track.npz", source_index=idx, times=times)
        meta = {
            "id": vid, "profile": profile, "source_file": entry["file"], "source_sha256": entry.get("sha256"),
            "fps": fraction_str(out_fps), "source_fps": fraction_str(info.fps), "frames": len(frames),
            "source_frames": info.n_frames, "duration_s": float(len(frames) / out_fps),
            "size": [info.width, info.height], "audio": info.has_audio, "rotation": info.rotation,
            "crop_size": cfg.crop_size, "crop_scale": cfg.crop_scale, "face_index": cfg.face_index,
            "min_face_px": cfg.min_face_px, "smooth_sigma": cfg.smooth_sigma,
            "faces_found": track.n_detected, "frames_interpolated": track.n_interpolated,
            "jitter_px": {"raw": round(jit["raw"], 4), "smoothed": round(jit["smoothed"], 4)},
            "resampling": "nearest source frame to k / fps" if fps is not None else "none (source rate)",
            "max_seconds": cfg.max_seconds, "detector": DETECTOR_NAME, "identity": entry.get("identity"),
            "fingerprint": fingerprint,
        }
        write_json(tmp / META, meta)
    return meta


def prep_videos(entries: list[dict], out_root: str | Path, cfg: DataConfig, profile: str) -> dict:
    """All manifest videos (in data.videos order when given) -> out_root, plus index.json."""
    from tqdm import tqdm

    out_root = Path(out_root)
    videos = [e for e in entries if e["kind"] == "video"]
    if cfg.source == "sample" and cfg.videos:
        by_id = {e["id"]: e for e in videos}
        missing = [v for v in cfg.videos if v not in by_id]
        if missing:
            raise InputError(None, f"data.videos {', '.join(missing)} not in the media manifest (rerun sample_media)")
        videos = [by_id[v] for v in cfg.videos]
    if not videos:
        raise InputError(None, "the media manifest lists no videos")
    out_root.mkdir(parents=True, exist_ok=True)
    for torn in out_root.glob(".*.tmp"):  # atomic_dir folders of a killed run: never taken as done
        shutil.rmtree(torn, ignore_errors=True)
    metas = [prep_video(e, out_root, cfg, profile) for e in tqdm(videos, desc="prep videos", unit="video")]
    keep = {m["id"] for m in metas}
    for stale in out_root.iterdir():  # earlier runs' videos no longer selected
        if stale.is_dir() and stale.name not in keep and is_prepped_video(stale):
            shutil.rmtree(stale)
    index = {"profile": profile, "detector": DETECTOR_NAME, "crop_size": cfg.crop_size,
             "videos": [{k: m[k] for k in ("id", "fps", "frames", "faces_found", "frames_interpolated")} | {"dir": m["id"]}
                        for m in metas]}
    write_json(out_root / "index.json", index)
    return index


def load_prepped(vid_dir: str | Path) -> tuple[np.ndarray, dict, Track]:
    """(crops (N, S, S, 3) uint8 RGB, meta, track) of one data/prepped/<vid>/ folder."""
    import json

    import cv2

    vid_dir = Path(vid_dir)
    if not is_prepped_video(vid_dir):
        raise InputError(vid_dir, "not a prepped video folder (no meta.json; run prep_videos)")
    meta = json.loads((vid_dir / META).read_text())
    files = sorted((vid_dir / CROPS).glob("*.png"))
    if len(files) != meta["frames"]:
        raise InputError(vid_dir, f"has {len(files)} crops but meta.json says {meta['frames']} frames")
    crops = np.stack([cv2.imread(str(f))[:, :, ::-1] for f in files])
    return crops, meta, Track.load(vid_dir / "track.npz")


# --------------------------------------------------------------------------------------- faces
def align_face_image(image: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, float] | None:
    """Aligned crop of the `face_index`-th largest face (>= min_face_px), or None."""
    face = select_face(detect_faces(image), cfg.face_index, cfg.min_face_px)
    if face is None:
        return None
    return crop(image, align_transform(face.landmarks5, cfg.crop_size, cfg.crop_scale), cfg.crop_size), face.score


def _face_items(entries: list[dict], cfg: DataConfig):
    """(name, source, clip, identity, frame index or -1, image loader) for every candidate image.
    The paper profile trains on CelebA-HQ only: its evaluation videos are never training faces."""
    for e in entries:
        if e["kind"] == "video" and cfg.source == "sample" and (not cfg.videos or e["id"] in cfg.videos):
            for t_i, (_, arr, _) in enumerate(iter_timed_frames(e["path"])):
                if t_i % cfg.face_every == 0:
                    yield f"{e['id']}_{t_i:06d}", e["file"], e["id"], e.get("identity"), t_i, (lambda a=arr: a)
        elif e["kind"] == "still":
            yield e["id"], e["file"], "", e.get("identity"), -1, (lambda p=e["path"]: read_image(Path(p)))
        elif e["kind"] == "image_dir":
            files = celeba_hq_images(e["path"])
            files = files[: cfg.n_train_faces] if cfg.n_train_faces else files
            for p in files:
                yield p.stem, str(p), "", p.stem, -1, (lambda p=p: read_image(p))


def prep_faces(entries: list[dict], out_dir: str | Path, cfg: DataConfig, profile: str) -> dict:
    """Training faces: sample = every face_every-th frame of the media videos + stills; paper =
    the CelebA-HQ folder. Images whose face is missing/too small/unreadable are skipped and listed."""
    from tqdm import tqdm

    rows, skipped = [], []
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        for name, source, clip, identity, frame_i, load in tqdm(list(_face_items(entries, cfg)), desc="prep faces", unit="img"):
            try:
                got = align_face_image(load(), cfg)
            except InputError as err:
                skipped.append({"image": name, "source": source, "reason": err.problem})
                continue
            if got is None:
                skipped.append({"image": name, "source": source,
                                "reason": f"no face #{cfg.face_index} of at least {cfg.min_face_px:g} px"})
                continue
            write_png(tmp / "images" / f"{name}.png", got[0])
            rows.append({"image": f"images/{name}.png", "source": source, "clip": clip, "identity": identity or "",
                         "frame": frame_i, "score": round(got[1], 4)})
        if not rows:
            raise InputError(None, f"no usable face in any of {len(skipped)} candidate images")
        with open(tmp / "index.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        summary = {"profile": profile, "detector": DETECTOR_NAME, "crop_size": cfg.crop_size, "crop_scale": cfg.crop_scale,
                   "n_images": len(rows), "n_skipped": len(skipped), "skipped": skipped,
                   "identities": sorted({r["identity"] for r in rows}), "face_every": cfg.face_every}
        write_json(tmp / "summary.json", summary)
        summary["index_sha256"] = sha256_file(tmp / "index.csv")
    return summary
