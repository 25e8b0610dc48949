"""Bring other methods' outputs (DVA, STIT, LTFE: run by the user, their code is not ours) into the
layout the metrics read, so they are measured exactly like our edits.

Input: metrics.external_dir/<method>/<prompt>/<vid>.<video ext> for method in metrics.external_methods,
<vid> naming a prepped original (data/prepped/<vid>). Each output is put on the original's crop
timeline (the prepped frames' source times, nearest output frame) and into its crop space:
- output frames of the crop size (square, data.crop_size): taken as they are (made from our crops);
- output frames of the source video's size: cropped with the original's smoothed track, exactly as
  prep_videos cropped the original (the output is assumed to start where the source video starts);
- any other size: InputError.
Output: OUT/<method>/<prompt>/<vid>.mp4 and OUT/manifest.json (sha256 of every input; methods with
nothing placed are listed as not provided, so the report shows the paper's numbers for them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsio import atomic_dir, sha256_file, write_json
from ..media import VIDEO_SUFFIXES
from ..layout import META


def _nearest(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    j = np.clip(np.searchsorted(times, targets), 1, max(len(times) - 1, 1)) if len(times) > 1 else np.zeros(len(targets), int)
    if len(times) > 1:
        j = np.where(np.abs(targets - times[j - 1]) <= np.abs(times[j] - targets) + 1e-9, j - 1, j)
    return j


def to_original_crops(path: Path, original_dir: Path) -> tuple[np.ndarray, str, int]:
    """(frames on the original's crop timeline, how, frames beyond the output's end)."""
    from ..face import crop
    from ..face.track import Track
    from ..video import read_video

    meta = json.loads((original_dir / META).read_text())
    size, (sw, sh) = int(meta["crop_size"]), meta["size"]
    video = read_video(path)
    h, w = video.frames.shape[1:3]
    track_file = original_dir / "track.npz"
    with np.load(track_file) as z:
        src_times = np.asarray(z["times"], np.float64) - float(z["times"][0])
    pick = _nearest(np.asarray(video.times, np.float64), src_times)
    beyond = int((src_times > video.times[-1] + 0.5 / float(video.fps)).sum())
    if (w, h) == (size, size):
        return video.frames[pick], "as is (crop-size output)", beyond
    if (w, h) == (sw, sh):
        track = Track.load(track_file)
        frames = np.stack([crop(video.frames[j], track.smoothed[i], size) for i, j in enumerate(pick)])
        return frames, "cropped with the original's smoothed track", beyond
    raise InputError(path, f"frames are {w}x{h}: neither the crop size {size}x{size} nor the source video's "
                     f"{sw}x{sh} of {original_dir.name}")


def import_external(src_root: str | Path, prepped: str | Path, out_dir: str | Path, methods: list[str],
                    profile: str) -> dict:
    from tqdm import tqdm

    from ..video import as_fraction, write_video

    src_root, prepped = Path(src_root), Path(prepped)
    manifest = {"profile": profile, "source": str(src_root), "methods": {}}
    with atomic_dir(out_dir) as tmp:
        for method in methods:
            files = sorted(p for p in (src_root / method).glob("*/*") if p.suffix.lower() in VIDEO_SUFFIXES) \
                if (src_root / method).is_dir() else []
            stray = sorted(p for p in (src_root / method).glob("*") if p.is_file()) if (src_root / method).is_dir() else []
            if stray:
                raise InputError(stray[0], f"expected {src_root}/{method}/<prompt>/<vid>.mp4, not files directly "
                                 f"under {method}/")
            entries = []
            for p in tqdm(files, desc=f"import {method}", unit="video", disable=len(files) < 2):
                vid, prompt = p.stem, p.parent.name
                original = prepped / vid
                if not (original / META).is_file():
                    raise InputError(p, f"no prepped original {original} for video id {vid!r}")
                frames, how, beyond = to_original_crops(p, original)
                fps = as_fraction(json.loads((original / META).read_text())["fps"])
                write_video(tmp / method / prompt / f"{vid}.mp4", frames, fps)
                entries.append({"prompt": prompt, "video": vid, "file": str(p), "sha256": sha256_file(p),
                                "frames": len(frames), "frames_past_output_end": beyond, "conversion": how})
            manifest["methods"][method] = entries or "not provided"
        write_json(tmp / "manifest.json", manifest)
    return manifest
