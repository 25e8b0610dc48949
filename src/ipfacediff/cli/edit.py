"""`ipfacediff edit` and `ipfacediff invert`: edit the face in any video with a text prompt.

edit: read the video, track/align/crop the face (temporally smoothed), DDIM-invert the crops with
the identity branch, edit them (IPFaceDiffPipeline), paste them back through a per-frame mask of
the edited region (face.mask.RegionMasker: face, or face + hair) with the inverse transform, and
write the result at the original size, every frame at its original timestamp, with the audio
carried, plus OUTPUT.json (e.g. out.mp4.json) holding the resolved configuration. Nothing is written
unless everything succeeds; an interrupted edit resumes where it stopped when run again with the same
arguments (see ipfacediff.editing.checkpoint).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError
from ..layout import DAG, record_path
from ..registry import method_names
from .settings_args import add_setting_arguments, apply_setting_arguments

log = logging.getLogger(__name__)

DEFAULT_MODELS = str(DAG.base_model)
BASE_BRANCHES = "base"  # --branches base: edit with the base weights on purpose
# SFace's published cosine threshold for "same person" (OpenCV Zoo face_recognition_sface README)
REFERENCE_MIN_SIMILARITY = 0.363


def register(subparsers) -> None:
    p = subparsers.add_parser("edit", help="edit the face in a video with a text prompt (IP-FaceDiff)")
    p.add_argument("input", help="video file (anything FFmpeg reads)")
    p.add_argument("-p", "--prompt", required=True, help="the edit, e.g. 'a person with bangs, sunglasses and a French beard'")
    p.add_argument("-o", "--output", required=True,
                   help="output video (.mp4, .mov or .mkv: the container and audio handling follow it); "
                        "OUTPUT.json (e.g. out.mp4.json) is written beside it")
    p.add_argument("--method", default="ours", choices=method_names(), help="editing method (ipfacediff.registry)")
    p.add_argument("--cache", default=None, help="keep (and reuse) the inversion cache at this path")
    p.add_argument("--start", type=float, default=None, metavar="SECONDS",
                   help="edit from this time on (seconds from the first frame); earlier frames are kept as decoded")
    p.add_argument("--end", type=float, default=None, metavar="SECONDS",
                   help="edit up to (not including) this time; later frames are kept as decoded")
    p.add_argument("--mask", default="auto", choices=("auto", "face", "face_hair", "ellipse"),
                   help="paste-back region: auto = face, or face + hair when the prompt edits hair (default: auto)")
    p.add_argument("--mask-dilate", type=float, default=None, help="grow the region by this many crop px (default: crop/32)")
    p.add_argument("--mask-feather", type=float, default=None, help="feathered band width in crop px (default: crop/16)")
    _common(p)
    add_setting_arguments(p)  # --steps, --seed, --device, --face-index, --guidance-scale, ... (settings.py cli())
    p.set_defaults(func=run_edit)

    q = subparsers.add_parser("invert", help="DDIM-invert the face crops of a video into a cache (for `edit --cache`)")
    q.add_argument("input", help="video file")
    q.add_argument("--cache", required=True, help="cache file to write (.safetensors); a valid one is reused")
    _common(q)
    add_setting_arguments(q, invert=True)
    q.set_defaults(func=run_invert)


def _common(p) -> None:
    """Options of both commands that are not settings fields (those come from add_setting_arguments)."""
    p.add_argument("--face", choices=["index", "largest"], default="index",
                   help="largest: the person whose face is largest over the whole clip (default: by --face-index)")
    p.add_argument("--face-ref", default=None, metavar="PHOTO",
                   help="edit the person in this photo (matched with the SFace recogniser)")
    p.add_argument("--models", default=None, help=f"diffusers model folder (default: {DEFAULT_MODELS})")
    p.add_argument("--branches", default=None,
                   help="folder with identity/ and directional/ (default: MODELS/../branches if present); "
                        f"'{BASE_BRANCHES}' edits with the base weights")
    p.add_argument("--crop-size", type=int, default=None, help="face crop side in pixels (default: the model's resolution)")
    p.add_argument("--source-prompt", default="", help="describes the original video (inversion / source prompt)")
    p.add_argument("--params", default=None, help="parameters file for defaults (default: the project's params.yaml if present)")


# --------------------------------------------------------------------------- settings


def _settings(args) -> dict:
    """Resolved settings: explicit flags, else params.yaml, else the settings defaults (= conf/)."""
    from ..config import PARAMS
    from ..settings import Settings, load_settings

    params_file = Path(args.params) if args.params else PARAMS
    if args.params and not params_file.is_file():
        raise InputError(params_file, "parameters file not found")
    found = bool(args.params) or params_file.is_file()
    settings = load_settings(params_file) if found else Settings()
    if args.steps is not None and args.steps < 1:
        raise InputError(None, f"--steps must be >= 1, got {args.steps}")
    if args.face_index is not None and args.face_index < 0:
        raise InputError(None, f"--face-index must be >= 0, got {args.face_index}")
    settings = apply_setting_arguments(settings, args)  # the given setting flags, re-validated
    data = settings.data
    models = Path(args.models or (params_file.parent / DEFAULT_MODELS if found else DEFAULT_MODELS))
    return {
        "params_file": str(params_file) if found else None, "profile": settings.profile if found else None, "edit": settings.edit,
        "models": models, "branches": _branches_dir(args.branches, models), "dtype": settings.models.dtype,
        "device": settings.device, "seed": settings.seed,
        "face_index": int(data.face_index), "min_face_px": float(data.min_face_px),
        "smooth_sigma": float(data.smooth_sigma), "crop_scale": float(data.crop_scale),
    }


def _branches_dir(arg: str | None, models: Path) -> Path | None:
    """The branches folder; None: base weights. An explicit folder must exist (a typo must not
    silently fall back to the base weights); the default one is used only if present."""
    if arg == BASE_BRANCHES:
        return None
    if arg is None:
        default = models.parent / "branches"
        if not default.is_dir():
            log.info("no branches folder at %s: editing with the base weights", default)
        return default if default.is_dir() else None
    path = Path(arg)
    if not path.is_dir():
        raise InputError(path, f"branches folder not found (give a folder with identity/ and directional/, "
                               f"or '--branches {BASE_BRANCHES}' for the base weights)")
    return path


def _check_branches(s: dict, used: set[str]) -> None:
    """An explicit branches folder must hold every branch the method uses."""
    if s["branches"] is None:
        return
    missing = [b for b in sorted(used) if not (s["branches"] / b).is_dir()]
    if missing and s["branches"] != s["models"].parent / "branches":
        raise InputError(s["branches"], f"has no {', '.join(b + '/' for b in missing)} branch folder "
                                        f"(the method needs {', '.join(sorted(used))})")


def _check_paths(src: Path, dst: Path | None = None) -> None:
    from ..video import VIDEO_SUFFIXES

    if not src.exists():
        raise InputError(src, "input video not found")
    if not src.is_file():
        raise InputError(src, "input is not a file")
    if dst is None:
        return
    if dst.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(dst, f"output must end in one of {', '.join(sorted(VIDEO_SUFFIXES))}")
    if dst.is_dir():
        raise InputError(dst, "output is a folder")
    same = dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(dst, src))
    if same or record_path(dst).resolve() == src.resolve():
        raise InputError(dst, "output path is the input video; refusing to overwrite the input")
    parent = next((q for q in [dst.parent, *dst.parent.parents] if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(dst, f"{parent} is a file, not a folder")
    if parent is not None and not os.access(parent, os.W_OK):
        raise InputError(dst, f"cannot write into {parent} (permission denied)")


def _check_span(args) -> None:
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    for name, v in (("--start", start), ("--end", end)):
        if v is not None and not (v >= 0 and v < float("inf")):
            raise InputError(None, f"{name} must be a time in seconds >= 0, got {v}")
    if start is not None and end is not None and end <= start:
        raise InputError(None, f"--end ({end:g} s) must be after --start ({start:g} s)")


def span_frames(times, start: float | None, end: float | None, path) -> range:
    """Indices of the frames whose timestamps fall in [start, end)."""
    import numpy as np

    times = np.asarray(times)
    lo = 0 if start is None else int(np.searchsorted(times, start - 1e-9, side="left"))
    hi = len(times) if end is None else int(np.searchsorted(times, end - 1e-9, side="left"))
    if hi <= lo:
        raise InputError(path, f"no frame between {start or 0:g} s and {end if end is not None else 'the end'} s "
                               f"(the clip has {len(times)} frames over {times[-1]:.3f} s)")
    return range(lo, hi)


def _model_crop_size(s: dict, crop_size: int | None) -> int:
    """The crop side from the model folder's configs, without loading any weights (so a clip
    without a face is refused before minutes of model loading)."""
    models = s["models"]
    if not models.is_dir():
        raise InputError(models, "model folder not found (run `dvc repro models`, or give a diffusers folder)")
    folder = models
    pointer = models / "ipfacediff.json"
    try:
        if pointer.is_file():
            folder = Path(json.loads(pointer.read_text()).get("path", models))
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(folder, f"not a diffusers model folder ({e.__class__.__name__}: {e})") from e
    scale = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    size = crop_size or int(unet.get("sample_size", 64)) * scale
    if size < 8 or size % scale:
        raise InputError(None, f"--crop-size must be a positive multiple of {scale}, got {size}")
    return int(size)


def _load(s: dict, used_branches: set[str]):
    """Components on the device (float32 on CPU) and the branches the run uses (editing.Engine)."""
    from ..editing import Engine

    folder = s["branches"]
    paths = {b: (folder / b if folder is not None and (folder / b).exists() else None) for b in sorted(used_branches)}
    engine = Engine.load(s["models"], paths, s["device"], s["dtype"])
    return engine.components, engine.branches


# --------------------------------------------------------------------------- face choice and crops


def face_choice(args, s: dict):
    """--face-index / --face largest / --face-ref PHOTO as a FaceChoice."""
    from ..face import FaceChoice

    ref = getattr(args, "face_ref", None)
    if ref is not None and getattr(args, "face", "index") == "largest":
        raise InputError(None, "--face largest and --face-ref exclude each other")
    if ref is None:
        return FaceChoice(index=s["face_index"], largest=getattr(args, "face", "index") == "largest")
    from ..face import detect_faces
    from ..face.prep import read_image
    from ..recognition import get_recognizer

    photo = Path(ref)
    if not photo.is_file():
        raise InputError(photo, "reference photo not found")
    img = read_image(photo)
    faces = detect_faces(img)
    if not faces:
        raise InputError(photo, "no face found in the reference photo")
    if len(faces) > 1:
        log.warning("%s: %d faces in the reference photo; using the largest", photo, len(faces))
    rec = get_recognizer("sface")

    def embed(frame, landmarks5):
        return rec.embed(rec.align(frame, landmarks5)[None])[0]

    return FaceChoice(reference=embed(img, faces[0].landmarks5), embed=embed, min_similarity=REFERENCE_MIN_SIMILARITY)


def track_span(path: Path, s: dict, crop_size: int, span: range, choice):
    from itertools import islice

    from ..face import track_video
    from ..video import iter_frames

    frames = islice(iter_frames(path), span.start, span.stop)
    return track_video(frames, min_face_px=s["min_face_px"], crop_size=crop_size, scale=s["crop_scale"],
                       sigma=s["smooth_sigma"], path=path, progress=True, choice=choice)


def write_crops(path: Path, track, span: range, folder: Path, masker=None):
    """The tracked face aligned in every span frame, as PNGs in `folder` (existing ones are complete:
    written atomically), read back lazily by batch (memory stays bounded whatever the length). With a
    `masker` (face.mask.RegionMasker) each frame's paste-back mask goes to folder/../masks likewise."""
    from itertools import islice

    from tqdm import tqdm

    from ..diffusion.inversion import CropFrames
    from ..editing.checkpoint import write_png_atomic
    from ..face import crop
    from ..face.mask import mask_file, write_mask

    folder.mkdir(parents=True, exist_ok=True)
    masks = folder.parent / "masks"
    if masker is not None:
        masks.mkdir(exist_ok=True)
    from ..video import iter_frames

    n = 0
    frames = islice(iter_frames(path), span.start, span.stop)
    for i, f in enumerate(tqdm(frames, total=len(span), desc="crop faces", unit="frame", leave=False)):
        target = folder / f"{i:06d}.png"
        if not target.is_file():
            write_png_atomic(target, crop(f, track.smoothed[i], track.crop_size))
        if masker is not None and not mask_file(masks, i).is_file():
            write_mask(mask_file(masks, i), masker(f, track.smoothed[i]))
        n += 1
    if n != track.n_frames:
        raise InputError(path, f"decoded {n} frames, tracked {track.n_frames}")
    return CropFrames(folder)


def face_crops(path: Path, s: dict, crop_size: int, folder: Path):
    """(track, crops, video facts) over the whole clip with the face chosen by `s['face_index']`."""
    from ..face import FaceChoice
    from ..video import probe

    info = probe(path)
    span = range(info.n_frames)
    track = track_span(path, s, crop_size, span, FaceChoice(index=s["face_index"]))
    return track, write_crops(path, track, span, folder), info


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
    size = _model_crop_size(s, args.crop_size)
    with tempfile.TemporaryDirectory(prefix="ipfacediff-") as tmp:
        _, crops, info = face_crops(src, s, size, Path(tmp) / "crops")  # no face: refused before loading models
        comps, branches = _load(s, {"identity"})
        c = _invert(comps, branches, crops, cache, s, args.source_prompt)
    print(f"invert: {info.n_frames} frames of {src} ({size}px face crops, {c.steps} steps) -> {cache}")
    return 0


def _edit_facts(args, s: dict, src: Path, method, size: int, masker) -> dict:
    """Everything that determines the edit's bytes: the resume fingerprint (and part of the record)."""
    from ..fsio import sha256_file

    return {
        "input_sha256": sha256_file(src), "prompt": args.prompt, "method": method.name, "seed": s["seed"],
        "edit": asdict(s["edit"]), "crop_size": size, "face_index": s["face_index"], "face": args.face,
        "face_ref_sha256": sha256_file(args.face_ref) if args.face_ref else None, "start": args.start, "end": args.end,
        "smooth": [s["smooth_sigma"], s["crop_scale"], s["min_face_px"]], "source_prompt": args.source_prompt,
        "models": _tree_stamp(s["models"]), "branches": None if s["branches"] is None else _tree_stamp(s["branches"]),
        "device": s["device"], "dtype": s["dtype"], "output_suffix": Path(args.output).suffix.lower(),
        "cache": args.cache, "mask": masker.record(),
    }


def _tree_stamp(folder: Path) -> dict:
    """Path, size and mtime of every file under `folder` (following a model pointer): weights
    replaced in place between two runs must not resume the first run's work."""
    folder = folder.resolve()
    pointer = folder / "ipfacediff.json"
    target = Path(json.loads(pointer.read_text()).get("path", folder)) if pointer.is_file() else folder
    files = sorted(p for p in target.rglob("*") if p.is_file())
    return {"path": str(target), "files": [[str(p.relative_to(target)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def _track(work, src, s, size, span, choice):
    from ..face import Track

    path = work / "track.npz"
    if path.is_file():
        return Track.load(path), json.loads((work / "face_choice.json").read_text())
    track = track_span(src, s, size, span, choice)
    from ..fsio import write_json

    write_json(work / "face_choice.json", choice.chosen)
    track.save(path)
    return track, choice.chosen


def _edited_frames(pipe, work, latents, src, track, span):
    """Decode and paste back the edited span, one VAE batch at a time, each batch's frames saved as
    PNGs (a batch whose frames all exist is done: decoding resumes at the first incomplete batch).
    Each frame's mask is read by frame number from work/masks, so a resumed run pastes with the
    same masks as an uninterrupted one."""
    from itertools import islice

    from tqdm import tqdm

    from ..diffusion.models import decode_latents, tensor_to_uint8
    from ..editing.checkpoint import write_png_atomic
    from ..face import paste_back
    from ..face.mask import smoothed_mask
    from ..video import iter_frames

    folder = work / "frames"
    folder.mkdir(exist_ok=True)
    bs = pipe.config.batch_size
    originals = islice(iter_frames(src), span.start, span.stop)
    for b in tqdm(range(0, len(latents), bs), desc="decode + paste back", unit="batch", leave=False):
        idx = range(b, min(b + bs, len(latents)))
        batch_originals = list(islice(originals, len(idx)))
        if all((folder / f"{i:06d}.png").is_file() for i in idx):
            continue
        crops = tensor_to_uint8(decode_latents(pipe.components, latents[b:b + bs], batch_size=bs).cpu())
        for i, f, e in zip(idx, batch_originals, crops, strict=True):
            mask = smoothed_mask(work / "masks", i, track.n_frames)
            write_png_atomic(folder / f"{i:06d}.png", paste_back(f, e, track.smoothed[i], mask))


def _output_frames(src: Path, work, span: range, n_frames: int):
    """Every frame of the clip: the edited ones inside the span, the decoded input elsewhere (the
    bar counts the frames handed to the encoder)."""
    from tqdm import tqdm

    from ..editing.checkpoint import read_png
    from ..video import iter_frames

    for i, frame in enumerate(tqdm(iter_frames(src), total=n_frames, desc="encode", unit="frame", leave=False)):
        yield read_png(work / "frames" / f"{i - span.start:06d}.png") if i in span else frame


def run_edit(args) -> int:
    import time

    from ..editing.checkpoint import WorkDir
    from ..registry import get_method
    from ..video import probe

    if not args.prompt.strip():
        raise InputError(None, "empty prompt: say what the edit should be, e.g. -p 'a person wearing glasses'")
    src, dst = Path(args.input), Path(args.output)
    _check_paths(src, dst)
    _check_span(args)
    method = get_method(args.method)
    s = _settings(args)
    used = {"identity"} | method.branches
    _check_branches(s, used)
    size = _model_crop_size(s, args.crop_size)
    masker = _masker(args, size)
    choice = face_choice(args, s)
    t0 = time.perf_counter()
    info = probe(src)
    span = span_frames(info.timeline.seconds(), args.start, args.end, src)
    work = WorkDir(dst, _edit_facts(args, s, src, method, size, masker))
    if work.resumed:
        log.info("resuming the interrupted edit from %s", work.path)
    try:
        result = _edit_into(work, args, s, src, dst, info, span, method, size, choice, masker)
    except InputError:
        work.remove()  # bad input is not resumable: leave nothing behind
        raise
    work.remove()
    if not result.audio_carried:
        print(f"ipfacediff: warning: {src}: audio not carried ({result.audio})")
    print(f"edit [{method.name}]: {result.n_frames} frames ({len(span)} edited) at {info.fps_str} fps"
          f"{' (variable)' if info.vfr else ''}, {info.width}x{info.height}, audio {result.audio} -> {dst} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _masker(args, size: int):
    """The paste-back region (--mask, auto: from the prompt) with its grow/feather widths; bad values
    are refused here, before any work."""
    from ..face.mask import RegionMasker, region_for_prompt

    requested = getattr(args, "mask", "auto")
    region = region_for_prompt(args.prompt) if requested == "auto" else requested
    return RegionMasker(size, region, getattr(args, "mask_dilate", None), getattr(args, "mask_feather", None))


def _edit_into(work, args, s: dict, src: Path, dst: Path, info, span: range, method, size: int, choice, masker):
    """Track, invert, edit, paste back and write `dst` (+ record), each unit resumable in `work`."""
    from ..fsio import atomic_path
    from ..video import write_video

    track, chosen = _track(work, src, s, size, span, choice)  # no face: refused before loading models
    engine = getattr(args, "engine", None)  # callers that edit many videos load it once (app/engine.py)
    comps, branches = (engine.components, engine.branches) if engine else _load(s, {"identity"} | method.branches)
    from ..diffusion.pipeline import IPFaceDiffPipeline
    from ..editing import edit_with_checkpoints, models_record

    crops = write_crops(src, track, span, work / "crops", masker)
    cache = _invert(comps, branches, crops, Path(args.cache) if args.cache else work / "inversion.safetensors", s,
                    args.source_prompt)
    pipe = IPFaceDiffPipeline(comps, branches, s["edit"], progress=True)
    latents, edit_info = edit_with_checkpoints(pipe, work, args.prompt, cache, s["seed"], method.name)
    _edited_frames(pipe, work, latents, src, track, span)
    record = {
        "input": info.to_dict(), "prompt": args.prompt, "method": method.name, "seed": s["seed"], "profile": s["profile"],
        "params_file": s["params_file"],
        "config": {**{k: v for k, v in asdict(s["edit"]).items() if k not in ("methods", "prompts")}, "crop_size": size,
                   "face_index": s["face_index"], "smooth_sigma": s["smooth_sigma"], "crop_scale": s["crop_scale"],
                   "source_prompt": args.source_prompt},
        "models": models_record(comps, branches, s["models"]), "edit": edit_info,
        "face": {"frames_detected": track.n_detected, "frames_interpolated": track.n_interpolated, "jitter_px": track.jitter(),
                 "choice": {"by": "index", "index": s["face_index"]} | chosen},
        "span": {"start_s": args.start, "end_s": args.end, "first_frame": span.start, "frames": len(span),
                 "outside": "decoded input frames, re-encoded unchanged"},
        "mask": masker.record() | {"requested": getattr(args, "mask", "auto")},
        **(getattr(args, "record_extra", None) or {}),  # callers' own fields (batch fingerprint, app job)
    }
    done_video, done_record = work / f"output{dst.suffix}", work / "output.json"
    result = write_video(done_video, _output_frames(src, work, span, info.n_frames), info.fps, audio_from=src, timeline=info.timeline)
    out = {"path": str(dst), "frames": result.n_frames, "width": result.width, "height": result.height,
           "fps": str(result.fps), "audio": result.audio, "audio_carried": result.audio_carried,
           "pix_fmt": result.pix_fmt, "timestamps": result.timestamps}
    with atomic_path(done_record) as tmp:
        tmp.write_text(json.dumps({**record, "output": out}, indent=2, sort_keys=True, default=str) + "\n")
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(done_record, record_path(dst))
    os.replace(done_video, dst)
    return result
