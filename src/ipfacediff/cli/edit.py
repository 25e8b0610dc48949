"""`ipfacediff edit` and `ipfacediff invert`: edit the face in any video with a text prompt.

edit: read the video, track/align/crop the face (temporally smoothed), DDIM-invert the crops with
the identity branch, edit them (IPFaceDiffPipeline), paste them back through a feathered face mask
with the inverse transform, and write the result at the original size, fps and frame count with the
audio kept, plus OUTPUT.json (with_suffix) holding the resolved configuration. Nothing is written
unless everything succeeds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError
from ..layout import DAG
from ..registry import method_names

log = logging.getLogger(__name__)

DEFAULT_MODELS = str(DAG.base_model)


def register(subparsers) -> None:
    p = subparsers.add_parser("edit", help="edit the face in a video with a text prompt (IP-FaceDiff)")
    p.add_argument("input", help="video file (anything FFmpeg reads)")
    p.add_argument("-p", "--prompt", required=True, help="the edit, e.g. 'a person with bangs, sunglasses and a French beard'")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .mov or .mkv); OUTPUT.json is written beside it")
    p.add_argument("--method", default="ours", choices=method_names(), help="editing method (ipfacediff.registry)")
    p.add_argument("--negative-prompt", default=None, help="default: params edit.negative_prompt")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: params edit.guidance_scale")
    p.add_argument("--cache", default=None, help="keep (and reuse) the inversion cache at this path")
    p.add_argument("--mask", default="auto", choices=("auto", "face", "face_hair", "ellipse"),
                   help="paste-back region: auto = face, or face + hair when the prompt edits hair (default: auto)")
    p.add_argument("--mask-dilate", type=float, default=None, help="grow the region by this many crop px (default: crop/32)")
    p.add_argument("--mask-feather", type=float, default=None, help="feathered band width in crop px (default: crop/16)")
    _common(p)
    p.set_defaults(func=run_edit)

    q = subparsers.add_parser("invert", help="DDIM-invert the face crops of a video into a cache (for `edit --cache`)")
    q.add_argument("input", help="video file")
    q.add_argument("--cache", required=True, help="cache file to write (.safetensors); a valid one is reused")
    _common(q)
    q.set_defaults(func=run_invert)


def _common(p) -> None:
    p.add_argument("--steps", type=int, default=None, help="DDIM steps for inversion and editing (default: params edit.steps)")
    p.add_argument("--seed", type=int, default=None, help="keyframe sampling seed (default: params seed)")
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: params device)")
    p.add_argument("--face-index", type=int, default=None, help="which face: 0 = largest (default: params data.face_index)")
    p.add_argument("--models", default=None, help=f"diffusers model folder (default: {DEFAULT_MODELS})")
    p.add_argument("--branches", default=None, help="folder with identity/ and directional/ (default: MODELS/../branches)")
    p.add_argument("--crop-size", type=int, default=None, help="face crop side in pixels (default: the model's resolution)")
    p.add_argument("--source-prompt", default="", help="describes the original video (inversion / source prompt)")
    p.add_argument("--params", default=None, help="parameters file for defaults (default: the project's params.yaml if present)")


# --------------------------------------------------------------------------- settings


def _settings(args) -> dict:
    """Resolved settings: explicit flags, else params.yaml, else the settings defaults (= conf/)."""
    import dataclasses

    from ..config import PARAMS
    from ..settings import Settings, load_settings

    params_file = Path(args.params) if args.params else PARAMS
    found = bool(args.params) or params_file.is_file()
    settings = load_settings(params_file) if found else Settings()
    overrides = {"steps": args.steps, "negative_prompt": getattr(args, "negative_prompt", None),
                 "guidance_scale": getattr(args, "guidance_scale", None)}
    edit = dataclasses.replace(settings.edit, **{k: v for k, v in overrides.items() if v is not None})  # re-validated
    data = settings.data
    models = Path(args.models or (params_file.parent / DEFAULT_MODELS if found else DEFAULT_MODELS))
    branches = Path(args.branches) if args.branches else models.parent / "branches"
    face_index = data.face_index if args.face_index is None else args.face_index
    if face_index < 0:
        raise InputError(None, f"--face-index must be >= 0, got {face_index}")
    return {
        "params_file": str(params_file) if found else None, "profile": settings.profile if found else None, "edit": edit,
        "models": models, "branches": branches, "dtype": settings.models.dtype, "device": args.device or settings.device,
        "seed": settings.seed if args.seed is None else args.seed,
        "face_index": int(face_index), "min_face_px": float(data.min_face_px),
        "smooth_sigma": float(data.smooth_sigma), "crop_scale": float(data.crop_scale),
    }


def _check_paths(src: Path, dst: Path | None = None) -> None:
    from ..video import VIDEO_SUFFIXES

    if not src.is_file():
        raise InputError(src, "input video not found")
    if dst is None:
        return
    if dst.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(dst, f"output must end in one of {', '.join(sorted(VIDEO_SUFFIXES))}")
    same = dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(dst, src))
    if same or dst.with_suffix(".json").resolve() == src.resolve():
        raise InputError(dst, "output path is the input video; refusing to overwrite the input")


def _load(s: dict, used_branches: set[str]):
    """Components on the device (float32 on CPU) and the branches the run uses (editing.Engine)."""
    from ..editing import Engine, branch_dirs

    engine = Engine.load(s["models"], branch_dirs(s["branches"], used_branches), s["device"], s["dtype"])
    return engine.components, engine.branches


# --------------------------------------------------------------------------- face crops


def face_crops(path: Path, s: dict, crop_size: int, folder: Path, masker=None):
    """(track, crops, video facts): the tracked face aligned in every frame, written as PNGs to
    `folder` and read back lazily by batch (memory stays bounded whatever the video length). With a
    `masker` (face.mask.RegionMasker) each frame's paste-back mask goes to folder/../masks."""
    from tqdm import tqdm

    from ..diffusion.inversion import CropFrames
    from ..face import crop, track_video
    from ..face.mask import mask_file, write_mask
    from ..face.prep import write_png
    from ..video import iter_frames, probe

    info = probe(path)
    track = track_video(iter_frames(path), face_index=s["face_index"], min_face_px=s["min_face_px"], crop_size=crop_size,
                        scale=s["crop_scale"], sigma=s["smooth_sigma"], path=path, progress=True)
    folder.mkdir(parents=True, exist_ok=True)
    if masker is not None:
        (folder.parent / "masks").mkdir(exist_ok=True)
    n = 0
    for i, f in enumerate(tqdm(iter_frames(path), total=info.n_frames, desc="crop faces", unit="frame", leave=False)):
        if i >= track.n_frames:
            break
        write_png(folder / f"{i:06d}.png", crop(f, track.smoothed[i], crop_size))
        if masker is not None:
            write_mask(mask_file(folder.parent / "masks", i), masker(f, track.smoothed[i]))
        n += 1
    if n != track.n_frames:
        raise InputError(path, f"decoded {n} frames, tracked {track.n_frames}")
    return track, CropFrames(folder), info


def _crop_size(args, comps) -> int:
    size = args.crop_size or comps.unet.config.sample_size * comps.vae_scale
    if size < 8 or size % comps.vae_scale:
        raise InputError(None, f"--crop-size must be a positive multiple of {comps.vae_scale}, got {size}")
    return int(size)


def _invert(comps, branches, crops, cache_path: Path, s: dict, source_prompt: str):
    from ..diffusion.inversion import InversionCache, invert_video

    invert_video(comps, branches, crops, cache_path, source_prompt, s["edit"].steps, s["edit"].batch_size, progress=True)
    return InversionCache(cache_path)


# --------------------------------------------------------------------------- handlers


def run_invert(args) -> int:
    import tempfile

    s = _settings(args)
    src, cache = Path(args.input), Path(args.cache)
    _check_paths(src)
    if cache.suffix != ".safetensors":
        raise InputError(cache, "cache file must end in .safetensors")
    comps, branches = _load(s, {"identity"})
    with tempfile.TemporaryDirectory(prefix="ipfacediff-") as tmp:
        track, crops, info = face_crops(src, s, _crop_size(args, comps), Path(tmp) / "crops")
        c = _invert(comps, branches, crops, cache, s, args.source_prompt)
    print(f"invert: {info.n_frames} frames of {src} ({_crop_size(args, comps)}px face crops, {c.steps} steps) -> {cache}")
    return 0


def run_edit(args) -> int:
    import tempfile
    import time

    import torch
    from tqdm import tqdm

    from ..diffusion.pipeline import IPFaceDiffPipeline
    from ..editing import models_record, write_edit
    from ..face import paste_back
    from ..face.mask import RegionMasker, region_for_prompt, smoothed_mask
    from ..registry import get_method
    from ..video import iter_frames

    if not args.prompt.strip():
        raise InputError(None, "empty prompt: say what the edit should be, e.g. -p 'a person wearing glasses'")
    src, dst = Path(args.input), Path(args.output)
    _check_paths(src, dst)
    method = get_method(args.method)
    s = _settings(args)
    t0 = time.perf_counter()
    engine = getattr(args, "engine", None)  # callers that edit many videos load it once (app/engine.py)
    comps, branches = (engine.components, engine.branches) if engine else _load(s, {"identity"} | method.branches)
    size = _crop_size(args, comps)
    requested = getattr(args, "mask", "auto")
    region = region_for_prompt(args.prompt) if requested == "auto" else requested
    masker = RegionMasker(size, region, getattr(args, "mask_dilate", None), getattr(args, "mask_feather", None))
    with tempfile.TemporaryDirectory(prefix="ipfacediff-") as tmp:
        track, crops, info = face_crops(src, s, size, Path(tmp) / "crops", masker)
        cache = _invert(comps, branches, crops, Path(args.cache) if args.cache else Path(tmp) / "inversion.safetensors", s, args.source_prompt)
        pipe = IPFaceDiffPipeline(comps, branches, s["edit"], progress=True)
        out = pipe(args.prompt, cache, generator=torch.Generator().manual_seed(s["seed"]), method=method.name, output_type="latent")
        originals = tqdm(iter_frames(src), total=info.n_frames, desc="paste back", unit="frame", leave=False)
        masks = (smoothed_mask(Path(tmp) / "masks", i, track.n_frames) for i in range(track.n_frames))
        # decoded one VAE batch at a time; strict: a frame-count mismatch aborts the (atomic) write
        frames = (paste_back(f, e, M, m) for f, e, M, m in
                  zip(originals, pipe.decode(out.latents), track.smoothed, masks, strict=True))
        record = {
            "input": info.to_dict(), "prompt": args.prompt, "method": method.name, "seed": s["seed"], "profile": s["profile"],
            "params_file": s["params_file"],
            "config": {**{k: v for k, v in asdict(s["edit"]).items() if k not in ("methods", "prompts")}, "crop_size": size,
                       "face_index": s["face_index"], "smooth_sigma": s["smooth_sigma"], "crop_scale": s["crop_scale"],
                       "source_prompt": args.source_prompt},
            "models": models_record(comps, branches, s["models"]), "edit": out.info,
            "face": {"frames_detected": track.n_detected, "frames_interpolated": track.n_interpolated, "jitter_px": track.jitter()},
            "mask": masker.record() | {"requested": requested},
            **(getattr(args, "record_extra", None) or {}),  # callers' own fields (batch fingerprint, app job)
        }
        result = write_edit(dst, frames, info.fps, record, audio_from=src)
    print(f"edit [{method.name}]: {result.n_frames} frames at {info.fps_str} fps, {info.width}x{info.height}, "
          f"audio {result.audio} -> {dst} ({time.perf_counter() - t0:.1f} s)")
    return 0
