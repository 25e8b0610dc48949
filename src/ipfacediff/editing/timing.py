"""Paper Table 2 through the job layer: a loaded `Engine` inverts and edits a clip at each length, and
each phase is measured (wall seconds, peak memory; `diffusion.timing.measure`).

The `timing` stage and benchmarks/edit_speed.py call `timing_table(engine, ...)`: the same engine
loading (`Engine.load`) and the same pipeline (`engine.pipeline(edit)`) as the edit stage and the CLI.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..diffusion.inversion import InversionCache, invert_video
from ..diffusion.timing import extend_frames, measure
from ..settings import EditSettings
from .engine import Engine


def time_video(
    engine: Engine,
    frames: np.ndarray,
    edit: EditSettings,
    invert_steps: int,
    prompt: str = "a person wearing glasses",
    method: str = "ours",
    fps: float = 10.0,
    seed: int = 0,
    invert_batch_size: int = 8,
    workdir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """One row of the timing table: invert + edit `frames` (uint8 NHWC) with `engine`, both phases measured."""
    device = engine.components.device
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        cache_path = Path(tmp) / "timing.safetensors"
        with measure(device) as inv:
            invert_video(engine.components, engine.branches, frames, cache_path, "", invert_steps, invert_batch_size, progress=progress)
        pipe = engine.pipeline(edit, progress=progress)
        with measure(device) as edited:
            out = pipe(prompt, InversionCache(cache_path), generator=torch.Generator().manual_seed(seed), method=method,
                       output_type="latent")
            # decoded frames streamed as a writer would take them: never all held at once
            decoded = sum(1 for _ in pipe.decode(out.latents))
    assert decoded == len(frames)
    n = len(frames)
    return {
        "frames": n,
        "seconds_video": round(n / fps, 3),
        "invert_s": round(inv.seconds, 3),
        "edit_s": round(edited.seconds, 3),
        "total_s": round(inv.seconds + edited.seconds, 3),
        "per_frame_s": round((inv.seconds + edited.seconds) / n, 4),
        "peak_mem_mb": round(max(inv.peak_mb, edited.peak_mb), 1),
        "invert_peak_mb": round(inv.peak_mb, 1),
        "edit_peak_mb": round(edited.peak_mb, 1),
        "peak_abs_mb": round(max(inv.peak_abs_mb, edited.peak_abs_mb), 1),
        "memory_kind": inv.kind,
    }


def timing_table(engine: Engine, clip: np.ndarray, lengths: list[int], edit: EditSettings, invert_steps: int,
                 warmup: bool = True, **kw) -> list[dict]:
    """`time_video` for each length (the clip extended by ping-pong), shortest first.

    A discarded 2-frame, 1-step run first keeps one-off costs (lazy initialisation, kernel selection,
    allocator growth) out of the first row.
    """
    if warmup:
        time_video(engine, extend_frames(clip, 2), dataclasses.replace(edit, steps=1), 1, **{**kw, "progress": False})
    return [time_video(engine, extend_frames(clip, n), edit, invert_steps, **kw) for n in sorted(lengths)]
