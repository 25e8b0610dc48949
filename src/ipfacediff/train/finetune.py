"""finetune_id / finetune_dir: build everything a branch needs from params and paths, train, save.

Outputs: the branch folder (`branches.save_branch`: LoRA adapter or full UNet + branch.json naming the
profile, base model, recogniser/CLIP, data, losses), the training curve TSV (step, loss, terms, lr)
for `dvc plots`, a W&B run (offline by default). Checkpoints live in their own folder, outside the
branch output, so a crashed run resumes from the latest one.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..layout import DAG
from ..prompts import EDIT_PROMPTS
from ..errors import InputError
from ..fsio import atomic_dir
from .trainer import TrainConfig, fingerprint, prepare_unet, train, write_curve
from ..settings import DirectionalTrainSettings, IdentityTrainSettings, Settings, as_settings

STAGES = {"identity": "finetune_id", "directional": "finetune_dir"}


IdentityConfig = IdentityTrainSettings  # params `finetune_id` (settings.py)


DirectionalConfig = DirectionalTrainSettings  # params `finetune_dir` (settings.py)

@dataclass
class Paths:
    out: Path
    checkpoints: Path
    curve: Path
    faces: Path = DAG.faces
    captions: Path = DAG.face_captions
    models: Path = DAG.base_model
    clip: Path = DAG.clip_model
    prompts: Path = EDIT_PROMPTS


def default_paths(branch: str) -> Paths:
    return Paths(out=DAG.branch(branch), checkpoints=DAG.checkpoints(branch), curve=DAG.training_curve(branch))


def branch_config(settings: Settings, branch: str) -> IdentityTrainSettings | DirectionalTrainSettings:
    """The branch's section (validated when the settings were loaded)."""
    return settings.finetune_id if branch == "identity" else settings.finetune_dir


def make_accelerator(device: str, cfg: TrainConfig):
    from accelerate import Accelerator

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("params.yaml", "device: cuda requested but no CUDA device is available")
    cpu = device == "cpu" or not torch.cuda.is_available()
    if cpu and cfg.mixed_precision == "fp16":
        if device != "auto":
            raise InputError("params.yaml", "mixed_precision fp16 needs a GPU; use 'no' or 'bf16' on CPU")
        # `device: auto` (the paper profile) means "the GPU if there is one": without one, fp16 autocast
        # does not exist, so train in float32 and say so (the branch meta records what ran)
        print("warning: device auto found no GPU: mixed_precision fp16 -> no (float32 training)", file=sys.stderr)
        cfg.mixed_precision = "no"
    from accelerate.state import AcceleratorState

    # the state is a process-wide singleton: let a second branch in one process pick its own precision
    # (the distributed PartialState of `accelerate launch` is kept)
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu)


def weight_dtype(cfg: TrainConfig) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)


def data_hash(face_set) -> str:
    h = hashlib.sha256()
    for img, cap in zip(face_set.images, face_set.captions):
        h.update(f"{img}\t{cap}\n".encode())
        h.update(hashlib.sha256((face_set.root / img).read_bytes()).digest())
    return h.hexdigest()


def write_disabled(branch: str, paths: Paths, terms: tuple[str, ...]) -> dict:
    """A disabled branch: an empty branch folder (the engine falls back to the base weights)."""
    with atomic_dir(paths.out):
        pass
    write_curve(paths.curve, [], terms)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    return {"branch": branch, "enabled": False}


def build_objective(branch: str, cfg, components, face_set, paths: Paths, device, dtype):
    from .objectives import DirectionalObjective, IdentityObjective

    if branch == "identity":
        from .identity_net import IdentityDistance, load_recognizer

        rec = load_recognizer(cfg.recognizer, cfg.recognizer_weights)
        dist = IdentityDistance(rec, face_set.crop_size, face_set.crop_scale).to(device)
        obj = IdentityObjective(components, dist, cfg.lambda_id, cfg.timestep_min, cfg.timestep_max, cfg.prompt == "caption")
        return obj, {"recognizer": rec.name, "lambda_id": cfg.lambda_id}, [dist]
    from ..prompts import select_prompts
    from .clip_loss import load_directional_loss

    prompts = select_prompts(cfg.prompts, paths.prompts)
    clip = load_directional_loss([paths.clip, *cfg.extra_clip], device=device)
    obj = DirectionalObjective(components, clip, prompts, cfg.lambda1, cfg.lambda2, cfg.reference, cfg.timestep_min, cfg.timestep_max)
    info = {"clip": [e.name for e in clip.encoders], "lambda1": cfg.lambda1, "lambda2": cfg.lambda2,
            "prompts": [p.id for p in prompts], "reference": cfg.reference}
    return obj, info, list(clip.encoders)


def load_base(models_dir: Path, device, dtype: torch.dtype, mode: str):
    """Base components; frozen ones in the compute dtype, a fully fine-tuned UNet in fp32 (master weights)."""
    from ..diffusion.models import load_components

    comps = load_components(models_dir, device=device, dtype=torch.float32)
    if dtype != torch.float32:
        for m in (comps.vae, comps.text_encoder, *([comps.unet] if mode == "lora" else [])):
            m.to(dtype)
    return comps


def finetune(branch: str, params: Settings | dict, paths: Paths | None = None, on_step: Callable[[int], None] | None = None) -> dict:
    """Train branch `branch` ("identity" | "directional") per params; returns the saved branch meta."""
    from accelerate.utils import set_seed

    from ..diffusion.branches import save_branch
    from ..tracking import start_run
    from .data import FaceDataset, build_face_set
    from .objectives import DirectionalObjective, IdentityObjective

    settings = as_settings(params)
    paths = paths or default_paths(branch)
    cfg = branch_config(settings, branch)
    terms = (IdentityObjective if branch == "identity" else DirectionalObjective).terms
    if not cfg.enabled:
        from accelerate import PartialState

        return write_disabled(branch, paths, terms) if PartialState().is_main_process else {"branch": branch, "enabled": False}
    seed = settings.seed if cfg.seed is None else cfg.seed
    acc = make_accelerator(settings.device, cfg)
    face_set = build_face_set(paths.faces, paths.captions)
    for s in face_set.skipped[:20]:
        acc.print(f"{STAGES[branch]}: skipped {s['image']}: {s['reason']}")
    if len(face_set.skipped) > 20:
        acc.print(f"{STAGES[branch]}: ... and {len(face_set.skipped) - 20} more skipped ({face_set.skipped_counts()})")
    dtype = weight_dtype(cfg)
    comps = load_base(paths.models, acc.device, dtype, cfg.mode)
    objective, loss_info, aux = build_objective(branch, cfg, comps, face_set, paths, acc.device, dtype)
    fp = fingerprint(cfg, {"branch": branch, "base": comps.model_hash, "data": data_hash(face_set), "seed": seed, **loss_info})
    # seeded here, after every load: LoRA's gaussian init draws from the global generator, and what a
    # load draws depends on what this process loaded before (the recogniser is built once per process)
    set_seed(seed)
    prepare_unet(comps.unet, branch, cfg)
    n_trainable = sum(p.numel() for p in comps.unet.parameters() if p.requires_grad)
    acc.print(f"{STAGES[branch]} [{settings.profile}]: {len(face_set)} faces ({len(face_set.skipped)} skipped), "
              f"{cfg.mode} {n_trainable:,} trainable parameters, {cfg.steps} steps x {cfg.batch_size} x {cfg.grad_accum}")
    uses = {"models-base": ("model", paths.models), "captions": ("captions", Path(paths.captions).parent)}
    if branch == "directional":  # its loss scores with CLIP
        uses["models-clip"] = ("model", paths.clip)
    with start_run(STAGES[branch], settings.as_params(), uses=uses,
                   produces={f"branch-{branch}": ("branch", paths.out)}) as run:
        result = train(comps.unet, objective, FaceDataset(face_set), cfg, branch, seed, paths.checkpoints, fp,
                       accelerator=acc, run=run, on_step=on_step, aux_modules=[comps.vae, *aux])
        meta = {
            "profile": settings.profile, "base_hash": comps.model_hash, "base_source": comps.info.get("source"),
            "base_weights": comps.info.get("weights"), "steps": result.steps,
            "seed": seed, "fingerprint": fp, "config": asdict(cfg), "trainable_parameters": n_trainable,
            "faces": len(face_set), "faces_skipped": len(face_set.skipped), "skipped_reasons": face_set.skipped_counts(),
            "crop_size": face_set.crop_size, "final": result.final, **loss_info,
        }
        if acc.is_main_process:
            save_branch(acc.unwrap_model(comps.unet), paths.out, branch, cfg.mode, meta)
            write_curve(paths.curve, result.curve, terms)
            run.summary({f"{branch}/final_{k}": v for k, v in result.final.items()})
    acc.wait_for_everyone()
    # where training resumed is run history, not part of the branch: a resumed run saves the same files
    return {"branch": branch, "name": branch, "mode": cfg.mode, **meta, "resumed_from": result.resumed_from}


def stage_main(branch: str, argv: list[str] | None = None) -> int:
    """CLI of the finetune_id / finetune_dir stage scripts (also under `accelerate launch`)."""
    import argparse
    import sys

    from ..settings import load_settings

    d = default_paths(branch)
    ap = argparse.ArgumentParser(prog=f"stages/{STAGES[branch]}.py", description=f"train the {branch} branch (see ipfacediff.train)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--faces", type=Path, default=d.faces, help="aligned faces (prep_faces)")
    ap.add_argument("--captions", type=Path, default=d.captions, help="faces.jsonl (caption)")
    ap.add_argument("--models", type=Path, default=d.models, help="diffusers folder (models)")
    ap.add_argument("--out", type=Path, default=d.out, help="branch folder to write")
    ap.add_argument("--checkpoints", type=Path, default=d.checkpoints, help="resumable checkpoints (kept across runs)")
    ap.add_argument("--curve", type=Path, default=d.curve, help="training curve TSV")
    if branch == "directional":
        ap.add_argument("--clip", type=Path, default=d.clip, help="CLIP folder (models)")
        ap.add_argument("--prompts", type=Path, default=d.prompts, help="edit prompts YAML")
    args = ap.parse_args(argv)
    paths = Paths(**{k: v for k, v in vars(args).items() if k != "params"})
    try:
        meta = finetune(branch, load_settings(args.params), paths)
    except InputError as e:
        print(f"{STAGES[branch]}: error: {e}", file=sys.stderr)
        return 2
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    if meta.get("enabled") is False:
        print(f"{STAGES[branch]}: disabled; wrote an empty branch folder {paths.out} (the engine uses the base weights)")
    else:
        final = ", ".join(f"{k} {v:.4g}" for k, v in meta["final"].items())
        print(f"{STAGES[branch]} [{meta['profile']}]: {meta['steps']} steps ({final}) -> {paths.out}, curve {paths.curve}")
    return 0
