"""The fine-tuning loop shared by both branches, on accelerate.

One optimizer step = `grad_accum` micro-batches of `batch_size` faces (split over the processes of
`accelerate launch`). LoRA (peft, adapter named after the branch) by default, the whole UNet with
mode "full". Every random draw of step s comes from generators seeded with (seed, micro-step, rank)
and the data order from (seed, epoch), so a run resumed from a checkpoint replays exactly what an
uninterrupted run does; the global RNG states are checkpointed too.

Checkpoints: <ckpt_dir>/step-XXXXXXX/ written through fsio.atomic_dir (a hidden temporary folder
renamed into place), `state.json` last; only folders whose state.json parses, whose fingerprint
matches this run's configuration and whose files all load count as "latest". A crash mid-write
leaves at worst a hidden `.step-*.tmp` folder that is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..fsio import atomic_dir, atomic_path
from ..settings import TrainerSettings

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^step-(\d{7})$")
CKPT_FILES = ("trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "curve.json", "state.json")
MODES = ("lora", "full")
OPTIMIZERS = ("adamw", "adamw8bit")
# keys that change how training runs but not what it computes: excluded from the resume fingerprint
NON_NUMERIC_KEYS = ("enabled", "checkpoint_every", "keep_checkpoints", "num_workers")


TrainConfig = TrainerSettings  # keys shared by finetune_id / finetune_dir (settings.py)


class Objective(Protocol):
    terms: tuple[str, ...]

    def __call__(self, unet: torch.nn.Module, batch: dict, gen: torch.Generator) -> dict[str, torch.Tensor]: ...


# --------------------------------------------------------------------------- parameters


def prepare_unet(unet: torch.nn.Module, branch: str, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze the UNet, then add and unfreeze the branch's LoRA adapter (or everything in full mode)."""
    unet.requires_grad_(False)
    if cfg.mode == "lora":
        from ..diffusion.branches import lora_config

        unet.add_adapter(lora_config(cfg.lora_rank, cfg.lora_alpha), adapter_name=branch)
        for name, p in unet.named_parameters():
            p.requires_grad_(".lora_" in name and f".{branch}." in name)
    else:
        unet.requires_grad_(True)
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # trainable weights stay fp32 under fp16/bf16 autocast
        p.data = p.data.float()
    if not params:
        raise RuntimeError(f"no trainable parameters in {cfg.mode} mode")
    return params


def trainable_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in unet.named_parameters() if p.requires_grad}


def make_optimizer(params: Sequence[torch.nn.Parameter], cfg: TrainConfig, device: torch.device):
    kw = dict(lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
    if cfg.optimizer == "adamw8bit":
        if device.type != "cuda":
            raise InputError("params.yaml", "optimizer adamw8bit needs a CUDA device (bitsandbytes); use adamw on CPU")
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise InputError("params.yaml", "optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes") from e
        return bnb.optim.AdamW8bit(params, **kw)
    return torch.optim.AdamW(params, **kw)


def make_lr_scheduler(optimizer, cfg: TrainConfig):
    from diffusers.optimization import get_scheduler

    try:
        return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.steps)
    except ValueError as e:
        raise InputError("params.yaml", f"lr_scheduler: {e}") from e


def step_generator(seed: int, micro: int, rank: int) -> torch.Generator:
    """CPU generator for micro-step `micro` of process `rank` (device independent, resume-safe)."""
    state = np.random.SeedSequence([seed, micro, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# --------------------------------------------------------------------------- checkpoints


def fingerprint(cfg: TrainConfig, extra: dict[str, Any]) -> str:
    """Hash of everything that determines the trained weights (resume only from a matching run)."""
    keys = {k: v for k, v in asdict(cfg).items() if k not in NON_NUMERIC_KEYS}
    blob = json.dumps({"cfg": keys, **extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(ckpt_dir: Path, step: int, unet, optimizer, lr_scheduler, ema, curve: list[dict], fp: str, rng_all: list[dict], keep: int, scaler=None) -> Path:
    from safetensors.torch import save_file

    target = ckpt_dir / f"step-{step:07d}"
    with atomic_dir(target) as tmp:
        save_file(trainable_state(unet), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_all, tmp / "rng.pt")
        if ema is not None:
            torch.save(ema.state_dict(), tmp / "ema.pt")
        if scaler is not None:  # fp16 loss scale
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        (tmp / "curve.json").write_text(json.dumps(curve))
        # written last: a folder without a readable state.json is never a checkpoint
        (tmp / "state.json").write_text(json.dumps({"step": step, "fingerprint": fp, "ema": ema is not None}))
    for old in list_checkpoints(ckpt_dir, fp)[:-keep]:
        shutil.rmtree(old[1], ignore_errors=True)
    return target


def list_checkpoints(ckpt_dir: Path, fp: str) -> list[tuple[int, Path]]:
    """Complete checkpoints of this configuration, oldest first."""
    found = []
    if not ckpt_dir.is_dir():
        return found
    for d in ckpt_dir.iterdir():
        m = CKPT_RE.match(d.name)
        if not m or not d.is_dir():
            continue
        try:
            state = json.loads((d / "state.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if state.get("fingerprint") != fp or state.get("step") != int(m.group(1)):
            continue
        if all((d / f).is_file() for f in CKPT_FILES) and (not state.get("ema") or (d / "ema.pt").is_file()):
            found.append((int(m.group(1)), d))
    return sorted(found)


def load_checkpoint(path: Path, unet, optimizer, lr_scheduler, ema, rank: int, scaler=None) -> list[dict]:
    """Restore weights, optimizer, schedule, EMA and RNG states; return the curve so far.

    Everything is read and checked before anything is applied, so a corrupt checkpoint leaves the
    model untouched and the caller can fall back to an older one.
    """
    from safetensors.torch import load_file

    state = load_file(str(path / "trainable.safetensors"))
    opt_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    sched_state = torch.load(path / "scheduler.pt", weights_only=False)
    ema_state = torch.load(path / "ema.pt", weights_only=False) if ema is not None else None
    scaler_file = path / "scaler.pt"
    scaler_state = torch.load(scaler_file, weights_only=False) if scaler is not None and scaler_file.is_file() else None
    rngs = torch.load(path / "rng.pt", weights_only=False)
    curve = json.loads((path / "curve.json").read_text())
    params = {n: p for n, p in unet.named_parameters() if p.requires_grad}
    if set(state) != set(params) or any(state[n].shape != params[n].shape for n in params):
        raise ValueError("trainable parameters do not match this model")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)
    optimizer.load_state_dict(opt_state)
    lr_scheduler.load_state_dict(sched_state)
    if ema_state is not None:
        ema.load_state_dict(ema_state)
    if scaler_state is not None:
        scaler.load_state_dict(scaler_state)
    set_rng_states(rngs[rank] if rank < len(rngs) else rngs[0])
    return curve


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    steps: int
    resumed_from: int
    final: dict[str, float]
    curve: list[dict]


def write_curve(path: str | Path, curve: list[dict], terms: Sequence[str]) -> None:
    cols = ["step", "loss", *terms, "lr"]
    lines = ["\t".join(cols)] + ["\t".join(_fmt(row.get(c)) for c in cols) for row in curve]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _fmt(v) -> str:
    return str(v) if isinstance(v, int) else f"{float(v):.8g}"


def train(
    unet: torch.nn.Module,
    objective: Objective,
    dataset: torch.utils.data.Dataset,
    cfg: TrainConfig,
    branch: str,
    seed: int,
    ckpt_dir: str | Path,
    fp: str,
    accelerator=None,
    run=None,
    on_step: Callable[[int], None] | None = None,
    aux_modules: Sequence[torch.nn.Module] = (),
) -> TrainResult:
    """Train `unet`'s branch parameters (see prepare_unet) with `objective`; resume when possible.

    `on_step(step)` runs after each optimizer step and its checkpoint (progress hooks, tests that
    simulate a crash). `aux_modules` are the vae / recogniser / CLIP to enable gradient
    checkpointing on (frozen; gradients flow through them to the UNet).
    """
    from accelerate import Accelerator
    from tqdm import tqdm

    from .data import StepBatchSampler, collate

    acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    ckpt_dir = Path(ckpt_dir)
    params = [p for p in unet.parameters() if p.requires_grad]
    if cfg.gradient_checkpointing:
        for m in (unet, *aux_modules):
            if getattr(m, "_supports_gradient_checkpointing", False):
                m.enable_gradient_checkpointing()
    optimizer = make_optimizer(params, cfg, acc.device)
    lr_scheduler = make_lr_scheduler(optimizer, cfg)
    ema = None
    if cfg.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=cfg.ema_decay)
    model, optimizer = acc.prepare(unet, optimizer)

    start, curve = 0, []
    for step, path in reversed(list_checkpoints(ckpt_dir, fp)):
        try:
            curve = load_checkpoint(path, unet, optimizer, lr_scheduler, ema, acc.process_index, acc.scaler)
            start = step
            acc.print(f"{branch}: resuming from {path} (step {step}/{cfg.steps})")
            break
        except Exception as e:  # unreadable despite its marker: fall back to the one before
            log.warning("%s: checkpoint %s unusable (%s); trying an older one", branch, path, e)
    if start >= cfg.steps:
        acc.print(f"{branch}: checkpoint at step {start} already covers {cfg.steps} steps")

    sampler = StepBatchSampler(len(dataset), cfg.batch_size, seed, start * cfg.grad_accum, cfg.steps * cfg.grad_accum,
                               acc.process_index, acc.num_processes)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.num_workers)
    batches = iter(loader)
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc=f"finetune {branch}", unit="step", disable=not acc.is_local_main_process)
    for step in range(start, cfg.steps):
        sums: dict[str, torch.Tensor] = {}
        for k in range(cfg.grad_accum):
            micro = step * cfg.grad_accum + k
            batch = next(batches)
            # no gradient all-reduce until the last micro-batch of the step
            sync = acc.no_sync(model) if k < cfg.grad_accum - 1 and acc.num_processes > 1 else contextlib.nullcontext()
            with sync:
                with acc.autocast():
                    terms = objective(model, batch, step_generator(seed, micro, acc.process_index))
                acc.backward(terms["loss"] / cfg.grad_accum)
            for name, v in terms.items():
                sums[name] = sums.get(name, 0) + v.detach().float() / cfg.grad_accum
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(params, cfg.max_grad_norm)
        lr = lr_scheduler.get_last_lr()[0]
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        row = {"step": step + 1, **{n: float(acc.reduce(v, "mean")) for n, v in sums.items()}, "lr": lr}
        curve.append(row)
        if run is not None and acc.is_main_process:
            run.log({f"{branch}/{k}": v for k, v in row.items() if k != "step"}, step=step + 1)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            _checkpoint(acc, ckpt_dir, step + 1, unet, optimizer, lr_scheduler, ema, curve, fp, cfg.keep_checkpoints)
        if on_step is not None:
            on_step(step + 1)
    bar.close()
    if ema is not None:
        ema.copy_to(params)
    acc.wait_for_everyone()
    final = {k: v for k, v in curve[-1].items() if k != "step"} if curve else {}
    return TrainResult(cfg.steps, start, final, curve)


def _checkpoint(acc, ckpt_dir, step, unet, optimizer, lr_scheduler, ema, curve, fp, keep) -> None:
    from accelerate.utils import gather_object

    rngs = gather_object([rng_states()]) if acc.num_processes > 1 else [rng_states()]
    if acc.is_main_process:
        save_checkpoint(ckpt_dir, step, unet, optimizer, lr_scheduler, ema, curve, fp, rngs, keep, acc.scaler)
    acc.wait_for_everyone()
