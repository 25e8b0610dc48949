"""The editing methods compared in the paper's tables (params `edit.methods`).

Each is a choice of branch for the source pass (the original video: correspondences and injected
features) and for the edit pass, whether PnP injection runs, and whether joint keyframe attention +
propagation runs. "base" means the base weights (no adapter).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    name: str
    source_branch: str  # "identity" | "base"
    edit_branch: str  # "directional" | "base"
    inject: bool  # PnP identity guidance (q/k + resblock features)
    propagate: bool  # joint keyframe attention + nearest-neighbour propagation
    description: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ours", "identity", "directional", True, True,
               "identity-branch source pass, directional-branch edit, identity guidance, keyframe propagation"),
        Method("no_id_guidance", "identity", "directional", False, True,
               "as ours without identity guidance (no PnP injection)"),
        Method("no_directional", "identity", "base", True, True,
               "as ours with the base weights in place of the directional branch"),
        Method("tokenflow", "base", "base", True, True,
               "TokenFlow: base model for both passes, PnP injection and keyframe propagation"),
        Method("per_frame", "identity", "directional", True, False,
               "PnP per frame with ours' branches: no joint attention, no propagation"),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(None, f"unknown edit method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


# --------------------------------------------------------------------------- the edit stage


def _fingerprint(record: dict) -> str:
    """Hash of everything an edit depends on (kept in its JSON; equal -> the output is up to date)."""
    keys = ("method", "prompt", "config", "seed", "models", "inversion", "video")
    return hashlib.sha256(json.dumps({k: record[k] for k in keys}, sort_keys=True, default=str).encode()).hexdigest()


def _prepped_videos(prepped: Path) -> list[str]:
    vids = sorted(p.name for p in prepped.iterdir() if (p / "crops").is_dir() and (p / "meta.json").is_file()) if prepped.is_dir() else []
    if not vids:
        raise InputError(prepped, "no prepped videos (expected <vid>/crops/*.png and <vid>/meta.json)")
    return vids


def _check_cache(cache, n_frames: int, components, branches, method: Method) -> None:
    from .inversion import branch_fingerprint

    if cache.n_frames != n_frames:
        raise InputError(cache.path, f"stale inversion: {cache.n_frames} frames, the prepped video has {n_frames} (re-run invert)")
    if cache.meta.get("model_sha256") != components.model_hash:
        raise InputError(cache.path, "stale inversion: made with other base weights (re-run invert)")
    expected = branch_fingerprint(branches, "identity") if method.source_branch == "identity" else "base"
    if cache.meta.get("branch") != expected:
        what = "another identity branch" if method.source_branch == "identity" else (
            "the identity branch; this method's source pass uses the base model (invert.base_for_tokenflow)")
        raise InputError(cache.path, f"stale inversion: made with {what} (re-run invert)")


def _cache_path(inversions: str | Path, vid: str, method: Method) -> Path:
    """Base-model methods read the base-model cache when the identity branch is fine-tuned."""
    from .inversion import BASE_SUBDIR

    base = Path(inversions) / BASE_SUBDIR / f"{vid}.safetensors"
    return base if method.source_branch == "base" and base.is_file() else Path(inversions) / f"{vid}.safetensors"


def _up_to_date(target: Path, fingerprint: str) -> bool:
    side = target.with_suffix(".json")
    if not (target.is_file() and side.is_file()):
        return False
    try:
        return json.loads(side.read_text()).get("fingerprint") == fingerprint
    except json.JSONDecodeError:
        return False


def _prune(out_dir: Path, keep: set[Path]) -> None:
    """Remove outputs of prompts/videos no longer configured (and emptied prompt folders)."""
    if not out_dir.is_dir():
        return
    for f in out_dir.glob("*/*"):
        if f.with_suffix(".mp4") not in keep:
            f.unlink()
    for d in out_dir.iterdir():
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def run_edit_stage(params: dict, method_name: str, prepped, inversions, models, branches_dir, out, prompts_file=None) -> list[dict]:
    """Edit every prepped video with every configured prompt using one method.

    Writes OUT/<method>/<prompt>/<vid>.mp4 + .json; returns one summary row per item.
    """
    import torch

    from ..config import section
    from ..prompts import EDIT_PROMPTS, select_prompts
    from ..tracking import start_run
    from ..video import as_fraction
    from .branches import load_branches
    from .inversion import InversionCache
    from .models import ModelsConfig, load_components
    from .pipeline import EditConfig, IPFaceDiffPipeline, models_record, write_edit

    method = get_method(method_name)
    cfg = section(params, EditConfig, "edit")
    prompts = select_prompts(cfg.prompts, prompts_file or EDIT_PROMPTS)
    prepped, out_dir = Path(prepped), Path(out) / method.name
    videos = _prepped_videos(prepped)
    seed, profile = int(params.get("seed", 0)), params.get("profile")
    components = load_components(models, params.get("device", "cpu"), section(params, ModelsConfig, "models").dtype)
    used = sorted({method.source_branch, method.edit_branch} - {"base"})
    paths = {b: Path(branches_dir) / b for b in used}
    branches = load_branches(components.unet, {b: p if p.exists() else None for b, p in paths.items()})
    pipe = IPFaceDiffPipeline(components, branches, cfg, progress=True)
    models_info = models_record(components, branches, models)
    if models_info.get("note"):
        log.warning("%s: %s", models, models_info["note"])
    rows, keep = [], set()
    uses = {"models-base": ("model", models), **{f"branch-{b}": ("branch", p) for b, p in paths.items()}}
    with start_run("edit", params, method=method.name, uses=uses, produces={f"edits-{method.name}": ("edits", out_dir)}) as run:
        for prompt in prompts:
            for vid in videos:
                meta = json.loads((prepped / vid / "meta.json").read_text())
                cache = InversionCache(_cache_path(inversions, vid, method))
                _check_cache(cache, int(meta["frames"]), components, branches, method)
                target = out_dir / prompt.id / f"{vid}.mp4"
                keep.add(target)
                record = {
                    "profile": profile, "method": asdict(method), "prompt": asdict(prompt), "seed": seed,
                    "config": asdict(cfg), "models": models_info,
                    "video": {"id": vid, "fps": meta["fps"], "frames": int(meta["frames"])},
                    "inversion": {"file": str(cache.path), "data_sha256": cache.data_sha256, "steps": cache.steps,
                                  "prompt": cache.prompt, "branch": cache.meta.get("branch")},
                }
                record["fingerprint"] = _fingerprint(record)
                row = {"profile": profile, "method": method.name, "prompt": prompt.id, "video": vid, "frames": cache.n_frames}
                if _up_to_date(target, record["fingerprint"]):
                    rows.append({**row, "status": "up to date", "seconds": 0.0})
                    continue
                t0 = time.perf_counter()
                result = pipe(prompt.target, cache, negative_prompt=cfg.negative_prompt, num_inference_steps=cfg.steps,
                              guidance_scale=cfg.guidance_scale, generator=torch.Generator().manual_seed(seed), method=method.name,
                              output_type="latent")
                write_edit(target, pipe.decode(result.latents), as_fraction(meta["fps"]), {**record, "edit": result.info})
                seconds = time.perf_counter() - t0
                run.log_edit(f"edit/{prompt.id}/{vid}", target, prepped / vid / "crops")
                run.log({f"seconds/{prompt.id}/{vid}": seconds, f"edit_s/{prompt.id}/{vid}": result.info["timings_s"]["edit"]})
                rows.append({**row, "status": "edited", "seconds": seconds})
    _prune(out_dir, keep)
    return rows
