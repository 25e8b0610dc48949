"""The one place the web app and `ipfacediff batch` call the editor through.

An in-the-wild edit (track, crop, invert, edit, paste back, write) is the `ipfacediff edit` code path
(cli/edit.py) run on an editing.Engine that is loaded once and kept while the models, branches and
device stay the same, so a server or a batch pays the model load once.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass
class EditOptions:
    """What a user sets for one edit (None = the project's params / the editor's default)."""

    method: str = "ours"
    steps: int | None = None
    seed: int | None = None
    mask: str = "auto"
    mask_dilate: float | None = None
    mask_feather: float | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    face_index: int | None = None
    crop_size: int | None = None
    device: str | None = None
    models: str | None = None
    branches: str | None = None
    params: str | None = None
    source_prompt: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, where: str | Path | None = None) -> EditOptions:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(where, f"unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**d)

    def public(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}


def _namespace(src: Path, dst: Path, prompt: str, o: EditOptions) -> argparse.Namespace:
    return argparse.Namespace(input=str(src), output=str(dst), prompt=prompt, method=o.method, steps=o.steps, seed=o.seed,
                              mask=o.mask, mask_dilate=o.mask_dilate, mask_feather=o.mask_feather,
                              guidance_scale=o.guidance_scale, negative_prompt=o.negative_prompt, face_index=o.face_index,
                              crop_size=o.crop_size, device=o.device, models=o.models, branches=o.branches,
                              params=o.params, source_prompt=o.source_prompt, cache=None, record_extra=o.extra,
                              face="index", face_ref=None, start=None, end=None)


_engine: dict = {}  # {"key": ..., "engine": editing.Engine}: the one engine kept loaded
_engine_lock = threading.Lock()


def engine_for(ns: argparse.Namespace):
    """The editing.Engine for these options' models, branches, device and method, loaded on first use
    and kept (one at a time: a different set replaces it)."""
    from ..cli.edit import _settings
    from ..editing import Engine, branch_dirs
    from ..registry import get_method

    s = _settings(ns)
    used = {"identity"} | get_method(ns.method).branches
    branches = s["branches"]  # None: the base weights (--branches base, or no default branches folder)
    key = (str(s["models"].resolve()), str(branches.resolve()) if branches else None, s["device"], s["dtype"],
           tuple(sorted(used)))
    with _engine_lock:
        if _engine.get("key") != key:
            _engine.clear()
            paths = branch_dirs(branches, used) if branches else dict.fromkeys(sorted(used))
            _engine.update(key=key, engine=Engine.load(s["models"], paths, s["device"], s["dtype"]))
        return _engine["engine"]


def edit_video(src: str | Path, dst: str | Path, prompt: str, options: EditOptions) -> dict:
    """Edit `src` into `dst` (+ its record dst.mp4.json, both written atomically); return the record."""
    from ..cli.edit import _check_paths, run_edit
    from ..layout import record_path
    from ..registry import get_method

    if not prompt.strip():
        raise InputError(None, "empty prompt: say what the edit should be")
    dst = Path(dst)
    ns = _namespace(Path(src), dst, prompt, options)
    _check_paths(Path(src), dst)  # bad input is refused before any model loads
    get_method(ns.method)
    ns.engine = engine_for(ns)
    run_edit(ns)
    return json.loads(record_path(dst).read_text())


def check_video(path: str | Path):
    """VideoInfo of a readable video with frames, else InputError naming the file."""
    from ..video import probe

    try:
        info = probe(path)
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"not a readable video ({type(e).__name__})") from e
    if info.n_frames < 1:
        raise InputError(path, "has no video frames")
    return info


def cut_span(src: str | Path, dst: str | Path, start_s: float, seconds: float) -> int:
    """Frames [start_s, start_s + seconds) of `src` (with its audio) written to `dst`; the frame count."""
    from ..video import iter_timed_frames, probe, write_video

    info = probe(src)
    frames = [f for t, f, _ in iter_timed_frames(src) if start_s - 1e-9 <= t < start_s + seconds - 1e-9]
    if not frames:
        raise InputError(src, f"no frames between {start_s:g} s and {start_s + seconds:g} s")
    write_video(dst, np.stack(frames), info.fps, audio_from=src if info.has_audio else None,
                audio_range_s=(start_s, start_s + len(frames) / float(info.fps)) if info.has_audio else None)
    return len(frames)


def face_overview(src: str | Path, options: EditOptions, crop_size: int = 256, max_frames: int = 30):
    """(frame with the tracked face box and landmarks drawn, its aligned crop with the paste-back region
    shaded) for the middle of the first `max_frames` frames; InputError when there is no face."""
    import cv2

    from ..face import crop, track_video
    from ..face.mask import RegionMasker
    from ..video import iter_frames

    frames = list(iter_frames(src, max_frames=max_frames))
    if not frames:
        raise InputError(src, "has no video frames")
    track = track_video(frames, face_index=options.face_index or 0, crop_size=crop_size, path=src)
    i = len(frames) // 2
    shown = frames[i].copy()
    M = track.smoothed[i]
    if track.detected[i]:
        x0, y0, x1, y1 = (round(v) for v in track.boxes[i])
        t = max(2, round(max(shown.shape[:2]) / 200))
        cv2.rectangle(shown, (x0, y0), (x1, y1), (0, 255, 0), t)
        for p in track.landmarks[i]:
            cv2.circle(shown, (round(p[0]), round(p[1])), t + 1, (255, 0, 0), -1)
    region = options.mask if options.mask != "auto" else "face"
    mask = RegionMasker(crop_size, region)(frames[i], M)
    c = crop(frames[i], M, crop_size).astype(np.float32)
    tint = np.array([255, 64, 64], np.float32)
    shaded = c * (1 - 0.35 * mask[..., None]) + tint * 0.35 * mask[..., None]
    return shown, np.clip(shaded, 0, 255).astype(np.uint8), track


def preview(src: str | Path, prompt: str, options: EditOptions, workdir: str | Path, start_s: float = 0.0,
            seconds: float = 1.0, steps: int | None = None):
    """Keyframes of a short span edited at reduced steps: [(original frame, edited frame)], the record."""
    from dataclasses import replace

    from ..video import read_video

    workdir = Path(workdir)
    with tempfile.TemporaryDirectory(prefix="preview-", dir=workdir) as tmp:
        span = Path(tmp) / "span.mp4"
        cut_span(src, span, start_s, seconds)
        out = Path(tmp) / "edited.mp4"
        opts = replace(options, steps=steps if steps is not None else preview_steps(options))
        record = edit_video(span, out, prompt, opts)
        a, b = read_video(span).frames, read_video(out).frames
    every = max(1, int(record["config"].get("keyframe_interval", 8)))
    idx = list(range(0, len(a), every))
    return [(a[i], b[i]) for i in idx], record


def preview_steps(options: EditOptions) -> int:
    """A fifth of the full run's DDIM steps (at least 2): the preview is for judging the prompt."""
    from ..cli.edit import _settings

    full = _settings(argparse.Namespace(params=options.params, steps=options.steps, negative_prompt=None,
                                        guidance_scale=None, models=options.models, branches=options.branches,
                                        face_index=options.face_index, device=options.device, seed=options.seed))
    return max(2, full["edit"].steps // 5)
