"""Inversion and editing speed, peak memory and overhead outside the UNet, against video length.

    python benchmarks/edit_speed.py --arch tiny --frames 8 32 --methods ours tokenflow --out benchmarks/results/cpu_tiny_fp32.json
    python benchmarks/edit_speed.py --arch true_size --dtype bf16 --frames 300 1200 --device cuda \\
        --out benchmarks/results/h100_true_size_bf16.json

--arch tiny: the sample profile's random-weight models (built into a temporary folder, or --models);
--arch true_size: SD 2.1-base shapes (865M-parameter UNet) with random weights, built in memory.
Branches: random identity + directional LoRA adapters of rank --lora-rank on the one UNet (0: none),
so `ours` switches adapters between its source and edit passes as in the DAG with fine-tuned branches.
Frames: a real clip (--crops, a prepped crops folder) extended by ping-pong, else synthetic smooth
frames (compute time does not depend on content). Per length the clip is inverted once, then every
method in --methods edits it with the full editor (joint keyframe attention, propagation, injection).

Per (method, length) row: `invert_s`, `edit_s` (the pipeline call), `decode_s` (streamed VAE decode),
`total_s` (their sum), `unet_s` (wall time inside UNet forwards during the edit: forward pre/post hooks
on each distinct UNet, device-synchronised on CUDA), `overhead` = edit_s / unet_s (what the editor
adds around the UNet: scheduler, indexing, cache reads, adapter switching, Python), peak memory
(timing.measure). `ratios`: total_s, edit_s and unet_s of the longest length over the shortest, per
method. Writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PROMPT = "a person wearing glasses"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["tiny", "true_size"], default="tiny")
    ap.add_argument("--models", help="tiny: an existing models/base folder instead of building one")
    ap.add_argument("--dtype", default="fp32", help="fp32 | bf16 | fp16")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--size", type=int, help="frame side in pixels (default 64 tiny, 512 true_size)")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps for inversion and editing (paper: 50)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--keyframe-interval", type=int, default=8)
    ap.add_argument("--methods", nargs="+", default=["ours"])
    ap.add_argument("--lora-rank", type=int, default=4, help="rank of the random identity/directional adapters (0: none)")
    ap.add_argument("--crops", help="a prepped crops folder (data/prepped/<vid>/crops) to extend")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--note", default="", help="free text stored in the results (e.g. what an uncommitted change is)")
    ap.add_argument("--out", required=True)
    return ap.parse_args(argv)


class UNetClock:
    """Wall seconds spent inside the forwards of `unets` while active (forward pre/post hooks;
    synchronised on CUDA so queued kernels are counted where they run)."""

    def __init__(self, unets, device):
        import torch

        self.unets = unets
        self.sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        self.seconds, self.calls, self._t0 = 0.0, 0, []

    def _pre(self, module, args):
        self.sync()
        self._t0.append(time.perf_counter())

    def _post(self, module, args, output):
        self.sync()
        self.seconds += time.perf_counter() - self._t0.pop()
        self.calls += 1

    def __enter__(self):
        self.handles = [h for u in self.unets for h in (u.register_forward_pre_hook(self._pre), u.register_forward_hook(self._post))]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def lora_branches(unet, rank: int):
    """BranchSet with random identity + directional LoRA adapters on `unet` (rank 0: base weights)."""
    from ipfacediff.diffusion.branches import BranchSet, add_lora_adapters, lora_config

    if rank <= 0:
        return BranchSet(base=unet)
    add_lora_adapters(unet, {name: lora_config(rank) for name in ("identity", "directional")})
    dtype = next(p for n, p in unet.named_parameters() if "lora_" not in n).dtype
    if any(p.dtype != dtype for p in unet.parameters()):  # adapters in the model's dtype
        unet.to(dtype=dtype)
    names = ("identity", "directional")
    return BranchSet(base=unet, unets=dict.fromkeys(names, unet), adapters={n: n for n in names},
                     sources=dict.fromkeys(names, "lora:random"))


def time_length(comps, branches, frames, cfg, methods, seed: int, work: Path, progress: bool) -> list[dict]:
    """Invert `frames` once, then edit them with each method: one row per method."""
    import torch

    from ipfacediff.diffusion.inversion import InversionCache, invert_video
    from ipfacediff.diffusion.pipeline import IPFaceDiffPipeline
    from ipfacediff.diffusion.timing import measure

    device, n = comps.device, len(frames)
    path = work / f"{n}.safetensors"
    with measure(device) as inv:
        invert_video(comps, branches, frames, path, "", cfg.steps, cfg.batch_size, progress=progress)
    rows = []
    for method in methods:
        pipe = IPFaceDiffPipeline(comps, branches, cfg, progress=progress)
        with UNetClock(branches.distinct_unets(), device) as unet, measure(device) as edit:
            out = pipe(PROMPT, InversionCache(path), generator=torch.Generator().manual_seed(seed), method=method, output_type="latent")
        with measure(device) as dec:
            decoded = sum(1 for _ in pipe.decode(out.latents))  # streamed as a writer takes them
        assert decoded == n
        total = inv.seconds + edit.seconds + dec.seconds
        rows.append({
            "method": method, "frames": n, "keyframes_per_step": len(out.info["keyframes"][0]) if out.info["keyframes"] else 0,
            "invert_s": round(inv.seconds, 3), "edit_s": round(edit.seconds, 3), "decode_s": round(dec.seconds, 3),
            "total_s": round(total, 3), "per_frame_s": round(total / n, 4),
            "unet_s": round(unet.seconds, 3), "unet_calls": unet.calls, "overhead": round(edit.seconds / unet.seconds, 4),
            "invert_peak_mb": round(inv.peak_mb, 1), "edit_peak_mb": round(edit.peak_mb, 1), "decode_peak_mb": round(dec.peak_mb, 1),
            "peak_abs_mb": round(max(inv.peak_abs_mb, edit.peak_abs_mb, dec.peak_abs_mb), 1), "memory_kind": inv.kind,
        })
    path.unlink()
    return rows


def code_state() -> dict:
    """The commit measured and any uncommitted change to the code under src/ (named in the results)."""
    import subprocess

    def git(*a):
        res = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else None

    return {"commit": git("rev-parse", "HEAD"), "uncommitted_src": (git("status", "--porcelain", "src") or "").splitlines()}


def length_ratios(rows: list[dict]) -> dict:
    """Per method: longest over shortest length of frames, total_s, edit_s and unet_s."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["frames"])
        lo, hi = mine[0], mine[-1]
        if hi["frames"] > lo["frames"]:
            out[method] = {k: round(hi[k] / lo[k], 3) for k in ("frames", "total_s", "edit_s", "unet_s")}
    return out


def main(argv=None) -> int:
    args = parse(argv)
    import dataclasses
    import os

    import torch

    from ipfacediff.diffusion import models as M
    from ipfacediff.diffusion.inversion import CropFrames
    from ipfacediff.diffusion.pipeline import EditConfig
    from ipfacediff.diffusion.sdpa import check_sdpa
    from ipfacediff.diffusion.timing import extend_frames, hardware_info, synthetic_frames
    from ipfacediff.fsio import write_json
    from ipfacediff.portable import portable_record

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = M.resolve_device(args.device), M.resolve_dtype(args.dtype)
    size = args.size or (64 if args.arch == "tiny" else 512)
    t_all = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.arch == "tiny":
            folder = args.models or Path(tmp) / "base"
            if not args.models:
                M.build_tiny(folder, seed=args.seed, sample_size=size)
            comps = M.load_components(folder, device, dtype)
        else:
            comps = M.build_true_size(args.seed, dtype, device, sample_size=size)
        n_unet = sum(p.numel() for p in comps.unet.parameters())
        branches = lora_branches(comps.unet, args.lora_rank)
        build_s = time.perf_counter() - t_all
        if args.crops:
            clip = CropFrames(args.crops)[:]
            if clip.shape[1] != size:
                import cv2
                import numpy as np

                clip = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in clip])
            source = f"real clip {args.crops}, ping-pong extended"
        else:
            clip = synthetic_frames(max(args.frames), size, args.seed)
            source = "synthetic smooth frames (timing does not depend on content)"
        cfg = EditConfig(steps=args.steps, batch_size=args.batch_size, keyframe_interval=args.keyframe_interval, methods=args.methods)
        # a discarded 2-frame, 1-step run per method keeps one-off costs (lazy init, allocator growth) out
        time_length(comps, branches, extend_frames(clip, 2), dataclasses.replace(cfg, steps=1), args.methods, args.seed,
                    Path(tmp), progress=False)
        rows = []
        for n in sorted(args.frames):
            rows += time_length(comps, branches, extend_frames(clip, n), cfg, args.methods, args.seed, Path(tmp),
                                progress=not args.no_progress)
            print(json.dumps(rows[-len(args.methods):]), flush=True)
    result = {
        "arch": args.arch, "weights": "random", "unet_params": n_unet, "lora_rank": args.lora_rank,
        "dtype": str(dtype).removeprefix("torch."), "size": size, "steps": args.steps, "batch_size": args.batch_size,
        "keyframe_interval": args.keyframe_interval, "methods": args.methods, "frames_source": source,
        "build_s": round(build_s, 2), "wall_s": round(time.perf_counter() - t_all, 1),
        "hardware": {**hardware_info(device), "load_average_at_start": [round(x, 2) for x in load_before]},
        "sdpa": check_sdpa(comps.unet),
        "command": "python benchmarks/edit_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "code": code_state(), "note": args.note,
        "rows": rows, "ratios": length_ratios(rows),
    }
    write_json(args.out, portable_record(result))  # no machine paths in committed results
    print(json.dumps(result["ratios"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
