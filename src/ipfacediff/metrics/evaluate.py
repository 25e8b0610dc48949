"""The metrics stages' work: find the edits, pair them with their originals, measure.

Layout read (README "Data layout"): originals `data/prepped/<vid>/` (crops/*.png + meta.json),
edits `data/edits/<method>/<prompt>/<vid>.mp4` (the engine) and `data/imported/<method>/<prompt>/<vid>.mp4`
(DVA/STIT/LTFE outputs brought in by the import_external stage). Every edit needs its original.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..media import VIDEO_SUFFIXES
from .clips import Clip, load_clip
from ..layout import is_prepped_video, prepped_videos
from ..registry import method_order
from ..settings import MetricsSettings

log = logging.getLogger(__name__)


MetricsConfig = MetricsSettings  # params `metrics` (settings.py)


@dataclass(frozen=True)
class EditItem:
    method: str
    prompt: str
    vid: str
    path: Path
    origin: str  # "engine" | "imported"


def discover_edits(roots: dict[str, str | Path]) -> list[EditItem]:
    """Every <root>/<method>/<prompt>/<vid>.<video> under each root (origin name -> root), sorted."""
    items = []
    for origin, root in roots.items():
        root = Path(root)
        if not root.is_dir():
            continue
        for p in sorted(root.glob("*/*/*")):
            if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
                items.append(EditItem(p.parent.parent.name, p.parent.name, p.stem, p, origin))
    return items


class Originals:
    """data/prepped/<vid> clips, loaded once."""

    def __init__(self, prepped: str | Path):
        self.root = Path(prepped)
        self._clips: dict[str, Clip] = {}

    def ids(self) -> list[str]:
        return prepped_videos(self.root, required=False)

    def path(self, vid: str) -> Path:
        return self.root / vid

    def get(self, vid: str, needed_by: Path | None = None) -> Clip:
        if vid not in self._clips:
            path = self.root / vid
            if not is_prepped_video(path):
                raise InputError(needed_by or path, f"no original for video {vid!r} (expected {path}/crops/ and meta.json)")
            self._clips[vid] = load_clip(path, vid)
        return self._clips[vid]


def finite(x) -> float | None:
    """JSON-safe number: NaN/inf -> None."""
    return None if x is None or not np.isfinite(x) else float(x)


# -------------------------------------------------------------------------------------- identity
def load_recognizers(cfg: MetricsConfig, names: list[str] | None = None):
    from ..recognition import get_recognizer

    names = names or cfg.recognizers
    if not names:
        raise InputError("params.yaml", "metrics.recognizers is empty")
    return [get_recognizer(n, (cfg.recognizer_weights or {}).get(n)) for n in names]


def run_identity(items: list[EditItem], originals: Originals, cfg: MetricsConfig, progress: bool = False) -> dict:
    """Table 1 for every method x recogniser, plus per-video and per-frame rows."""
    from tqdm import tqdm

    from .identity import Embedder, aggregate, build_gallery, compare, gallery_entries, rank_in_gallery

    if not items:
        raise InputError(None, "no edited videos found (expected data/edits/<method>/<prompt>/<vid>.mp4)")
    recs = load_recognizers(cfg)
    embedder = Embedder(progress=False)
    specs = [s for s in cfg.gallery if Path(s).exists()]
    entries, dropped = gallery_entries(specs) if specs else ([], [])
    missing_specs = [s for s in cfg.gallery if not Path(s).exists()]
    if missing_specs:
        log.warning("gallery source(s) not found, left out of retrieval: %s", ", ".join(missing_specs))
    out = {"recognizers": [r.info() for r in recs], "methods": {}, "videos": [], "frames": [],
           "gallery": {"sources": cfg.gallery, "missing_sources": missing_specs, "duplicate_ids_dropped": dropped},
           "frame_stride": cfg.frame_stride}
    for rec in recs:
        cache = Path(cfg.gallery_cache) / f"{rec.name}.npz" if cfg.gallery_cache else None
        gallery = build_gallery(entries, rec, embedder, cache, cfg.frame_stride) if entries else None
        if gallery is not None:
            out["gallery"][rec.name] = {"size": len(gallery), "skipped": gallery.skipped, "reused_from_cache": gallery.reused}
        results = []
        for item in tqdm(items, desc=f"identity [{rec.name}]", unit="video", disable=not progress):
            original = originals.get(item.vid, item.path).every(cfg.frame_stride)
            edited = load_clip(item.path, item.vid).every(cfg.frame_stride)
            res = compare(rec, embedder, original, edited)
            if gallery is not None:
                v_src = embedder.video(rec, original)
                (res.rank,), res.gallery_size = rank_in_gallery(gallery, item.vid, v_src, [embedder.video(rec, edited)])
            results.append((item, res))
            out["videos"].append({"method": item.method, "prompt": item.prompt, "video": item.vid,
                                  "origin": item.origin} | {k: _json(v) for k, v in res.summary().items()})
            out["frames"] += [{"method": item.method, "prompt": item.prompt, "video": item.vid, "recognizer": rec.name,
                               "time_s": t, "similarity": round(s, 6)}
                              for t, s in zip(res.frame_times, res.frame_similarity)]
        for method in method_order(sorted({i.method for i, _ in results})):
            agg = aggregate([r for i, r in results if i.method == method])
            origin = next(i.origin for i, _ in results if i.method == method)
            out["methods"].setdefault(method, {"origin": origin})[rec.name] = {k: _json(v) for k, v in agg.items()}
    return out


def _json(v):
    if isinstance(v, (float, np.floating)):
        return finite(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


# -------------------------------------------------------------------------------------- temporal
def paired_frames(original: Clip, edited: Clip, same_fps: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """(edit frames, original frames) on the frames paired by time, and the unpaired count.
    Flow from the source needs both on one frame grid: same fps, same frame size."""
    from .clips import pair_by_time

    if same_fps and original.fps is not None and edited.fps is not None and original.fps != edited.fps:
        raise InputError(edited.path, f"{float(edited.fps):g} fps but its original {original.path} is "
                         f"{float(original.fps):g} fps: warp error with source flow needs the same frame rate")
    if original.frames.shape[1:] != edited.frames.shape[1:]:
        h, w = edited.frames.shape[1:3]
        H, W = original.frames.shape[1:3]
        raise InputError(edited.path, f"frames are {w}x{h} but its original's are {W}x{H} (import_external "
                         "crops full-frame outputs to the original's crops)")
    pairing = pair_by_time(original, edited)
    i_edit = pairing.edit_index
    return edited.frames[i_edit], original.frames[pairing.source_index[i_edit]], \
        pairing.n_edit_unpaired + pairing.n_source_unpaired


def run_temporal(items: list[EditItem], originals: Originals, cfg: MetricsConfig, device: str = "cpu",
                 progress: bool = False) -> dict:
    """Table 3: E_warp per edit with flow from its original, per method; the originals' own E_warp
    (flow from themselves) as the reference row."""
    from tqdm import tqdm

    from .temporal import flow_estimator, warp_error

    if not items:
        raise InputError(None, "no edited videos found (expected data/edits/<method>/<prompt>/<vid>.mp4)")
    flow = flow_estimator(cfg.flow, cfg.raft_weights, device)
    out = {"flow": flow.description, "methods": {}, "videos": [], "originals": {}}
    for vid in sorted({i.vid for i in items}):
        res = warp_error(originals.get(vid).frames, flow)
        out["originals"][vid] = res.summary() | {"per_pair": res.per_pair}
    for item in tqdm(items, desc="warp error", unit="video", disable=not progress):
        original, edited = originals.get(item.vid, item.path), load_clip(item.path, item.vid)
        frames, source, unpaired = paired_frames(original, edited)
        res = warp_error(frames, flow, source=source)
        out["videos"].append({"method": item.method, "prompt": item.prompt, "video": item.vid, "origin": item.origin,
                              "frames_unpaired": unpaired, "per_pair": res.per_pair}
                             | {k: _json(v) for k, v in res.summary().items()})
    for method in method_order(sorted({v["method"] for v in out["videos"]})):
        rows = [v for v in out["videos"] if v["method"] == method]
        vals = [v["warp_error"] for v in rows if v["warp_error"] is not None]
        out["methods"][method] = {"origin": rows[0]["origin"], "videos": len(rows),
                                  "warp_error": finite(np.mean(vals)) if vals else None,
                                  "warp_error_std": finite(np.std(vals)) if vals else None}
    ref = [v["warp_error"] for v in out["originals"].values() if v["warp_error"] is not None]
    out["original_reference"] = {"videos": len(ref), "warp_error": finite(np.mean(ref)) if ref else None,
                                 "flow_from": "the original itself"}
    return out


# ------------------------------------------------------------------------------------------ CLIP
def run_clip(items: list[EditItem], originals: Originals, cfg: MetricsConfig, device: str = "cpu",
             progress: bool = False) -> dict:
    """Text-frame and directional CLIP scores per edit and method (target/reference from the
    prompt file; edits whose prompt id is unknown there are scored with the id as the target)."""
    from tqdm import tqdm

    from ..prompts import EDIT_PROMPTS, load_edit_prompts
    from .clip_score import ClipScorer

    if not cfg.clip or not Path(cfg.clip).is_dir():
        return {"available": False, "reason": f"no CLIP folder at {cfg.clip}", "methods": {}, "videos": []}
    scorer = ClipScorer(cfg.clip, device=device)
    prompts = load_edit_prompts(EDIT_PROMPTS) if EDIT_PROMPTS.is_file() else {}
    out = {"available": True, "clip": scorer.description, "clip_weights": scorer.weights, "methods": {}, "videos": []}
    for item in tqdm(items, desc="CLIP scores", unit="video", disable=not progress):
        p = prompts.get(item.prompt)
        target, reference = (p.target, p.reference) if p else (item.prompt.replace("_", " "), "a photo of a person")
        s = scorer.score(originals.get(item.vid, item.path), load_clip(item.path, item.vid), target, reference)
        out["videos"].append({"method": item.method, "prompt": item.prompt, "video": item.vid, "origin": item.origin,
                              "target": target, "reference": reference} | s)
    for method in method_order(sorted({v["method"] for v in out["videos"]})):
        rows = [v for v in out["videos"] if v["method"] == method]
        out["methods"][method] = {"videos": len(rows), "clip_score": finite(np.mean([r["clip_score"] for r in rows])),
                                  "directional_clip": finite(np.mean([r["directional_clip"] for r in rows]))}
    return out
