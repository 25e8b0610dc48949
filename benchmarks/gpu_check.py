"""GPU check: wall time and CUDA peak memory per phase at true size, 300 and 1200 frames (one command).

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check_true_size_bf16.json

Defaults: SD 2.1-base architecture with random weights (865.9M-parameter UNet), 512x512, bf16,
`--device cuda`, 300 and 1200 synthetic frames, method `ours`, 3 inversion + 3 edit steps, then
extrapolated to 50 + 50: every step makes the same UNet calls (one per frame batch in the inversion;
one keyframe pair and the propagation pairs in the edit; injection flags change no work), so phase time
is (measured - first-step overhead) scaled per step; the first step is reported apart. Peaks are
`torch.cuda.max_memory_allocated` per phase (reset at each phase; keyframe and propagation passes
are interleaved, so each pass pair resets and reads it) and do not depend on the step count.
A discarded 2-frame, 1-step run first keeps one-off costs (lazy init, kernel selection) out.
`sdpa` in the JSON names the attention kernel the edit runs (diffusion/sdpa.py: flash, efficient or
cudnn keep no score matrix; `math` would, and is warned about).
Expected under 8 minutes on one H100/H200. On CPU (`--device cpu --arch tiny`) it runs the same code
(peaks there are not measured: null).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GIB = 1024**3


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["true_size", "tiny"], default="true_size")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, help="frame side in pixels (default 512 true_size, 64 tiny)")
    ap.add_argument("--frames", type=int, nargs="+", default=[300, 1200])
    ap.add_argument("--steps", type=int, default=3, help="inversion and edit steps measured")
    ap.add_argument("--extrapolate-to", type=int, default=50, help="steps the per-step figures are scaled to")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--method", default="ours")
    ap.add_argument("--keyframe-attention", choices=["auto", "exact", "bounded"], default="auto",
                    help="edit.keyframe_attention (auto: exact while its keyframe state fits 8 GiB; 1200 frames at 512 px go bounded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    return ap.parse_args(argv)


class Clock:
    """Wall time (device-synchronised) and, on CUDA, max_memory_allocated of a block."""

    def __init__(self, device):
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"
        self.device = device

    def __enter__(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        self.peak = self.torch.cuda.max_memory_allocated(self.device) if self.cuda else None


def timed_pipeline_class():
    from ipfacediff.diffusion.pipeline import IPFaceDiffPipeline
    from ipfacediff.diffusion.rehearsal import PHASE_OF_MODE

    class TimedPipeline(IPFaceDiffPipeline):
        """The editor; each source+edit pass pair timed and its CUDA peak read, per phase and step."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.seconds = defaultdict(lambda: defaultdict(float))  # phase -> step -> s
            self.peaks = defaultdict(int)

        def _pair(self, state, method, mode, *args):
            phase = PHASE_OF_MODE[mode]
            with Clock(self.components.device) as c:
                eps = super()._pair(state, method, mode, *args)
            self.seconds[phase][state.step] += c.seconds
            if c.peak is not None:
                self.peaks[phase] = max(self.peaks[phase], c.peak)
            return eps

    return TimedPipeline


def run_length(comps, frames, cfg, steps: int, method: str, seed: int, batch_size: int, work: Path, progress: bool = True) -> dict:
    import torch

    from ipfacediff.diffusion.branches import BranchSet
    from ipfacediff.diffusion.inversion import InversionCache, invert_video

    device = comps.device
    branches = BranchSet(base=comps.unet)
    path = work / f"{len(frames)}.safetensors"
    with Clock(device) as inv:
        invert_video(comps, branches, frames, path, "", steps, batch_size, progress=progress)
    pipe = timed_pipeline_class()(comps, branches, cfg, progress=progress)
    with Clock(device) as edit:
        out = pipe("a person wearing glasses", InversionCache(path), generator=torch.Generator().manual_seed(seed), method=method,
                   output_type="latent")
    with Clock(device) as dec:
        n = sum(1 for _ in pipe.decode(out.latents))
    assert n == len(frames)
    path.unlink()
    gib = lambda b: None if b is None else round(b / GIB, 3)  # noqa: E731
    return {
        "frames": len(frames), "keyframes_per_step": len(out.info["keyframes"][0]) if out.info["keyframes"] else 0,
        "keyframe_attention": out.info["keyframe_attention"],
        "invert_s": round(inv.seconds, 3), "edit_s": round(edit.seconds, 3), "decode_s": round(dec.seconds, 3),
        "edit_per_step_s": out.info["timings_s"]["per_step"],
        "pass_s_per_step": {p: [round(v, 4) for _, v in sorted(s.items())] for p, s in pipe.seconds.items()},
        "peak_gib": {"invert": gib(inv.peak), "edit": gib(edit.peak), "decode": gib(dec.peak),
                     **{p: gib(v) for p, v in pipe.peaks.items()}},
    }


def extrapolate(row: dict, steps: int, to: int) -> dict:
    """Per-step costs are constant after the first step: later steps' mean x (to - 1) + first step."""
    per = row["edit_per_step_s"]
    edit = per[0] + (sum(per[1:]) / len(per[1:]) if len(per) > 1 else per[0]) * (to - 1)
    invert = row["invert_s"] * to / steps  # one forward per frame batch per step, no per-step set-up
    return {"invert_s": round(invert, 1), "edit_s": round(edit, 1), "decode_s": row["decode_s"],
            "total_s": round(invert + edit + row["decode_s"], 1),
            "frames_per_s": round(row["frames"] / (invert + edit + row["decode_s"]), 3)}


def main(argv=None) -> int:
    args = parse(argv)
    import dataclasses

    from ipfacediff.diffusion import models as M
    from ipfacediff.diffusion.pipeline import EditConfig
    from ipfacediff.diffusion.sdpa import check_sdpa
    from ipfacediff.diffusion.timing import hardware_info, synthetic_frames
    from ipfacediff.fsio import write_json
    from ipfacediff.portable import portable_record

    device, dtype = M.resolve_device(args.device), M.resolve_dtype(args.dtype)
    size = args.size or (512 if args.arch == "true_size" else 64)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.arch == "tiny":
            M.build_tiny(work / "base", seed=args.seed, sample_size=size)
            comps = M.load_components(work / "base", device, dtype)
        else:
            comps = M.build_true_size(args.seed, dtype, device, sample_size=size)
        sdpa = check_sdpa(comps.unet)  # warns when attention would run the math kernel on CUDA
        cfg = EditConfig(steps=args.steps, batch_size=args.batch_size, methods=[args.method], keyframe_attention=args.keyframe_attention)
        clip = synthetic_frames(max(args.frames), size, args.seed)
        run_length(comps, clip[:2], dataclasses.replace(cfg, steps=1), 1, args.method, args.seed, args.batch_size, work, progress=False)
        rows = []
        for n in sorted(args.frames):
            row = run_length(comps, clip[:n], cfg, args.steps, args.method, args.seed, args.batch_size, work)
            row[f"extrapolated_{args.extrapolate_to}_steps"] = extrapolate(row, args.steps, args.extrapolate_to)
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("frames", "invert_s", "edit_s", "decode_s", "peak_gib")}), flush=True)
    result = {
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "arch": args.arch, "weights": "random", "unet_params": sum(p.numel() for p in comps.unet.parameters()),
        "dtype": str(dtype).removeprefix("torch."), "size": size, "steps": args.steps, "method": args.method,
        "edit_config": dataclasses.asdict(cfg), "hardware": hardware_info(device), "sdpa": sdpa,
        "wall_s": round(time.perf_counter() - t_all, 1),
        "rows": rows,
    }
    write_json(args.out, portable_record(result))  # no machine paths in committed results
    return 0


if __name__ == "__main__":
    sys.exit(main())
