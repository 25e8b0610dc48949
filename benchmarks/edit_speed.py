"""Inversion and editing speed and peak memory against video length, for a chosen architecture.

    python benchmarks/edit_speed.py --arch tiny --frames 8 16 32 --out benchmarks/results/cpu_tiny_fp32.json
    python benchmarks/edit_speed.py --arch true_size --dtype bf16 --frames 300 1200 --device cuda \\
        --out benchmarks/results/h100_true_size_bf16.json

--arch tiny: the sample profile's random-weight models (built into a temporary folder, or --models);
--arch true_size: SD 2.1-base shapes (865M-parameter UNet) with random weights, built in memory.
Frames: a real clip (--crops, a prepped crops folder) extended by ping-pong, else synthetic smooth
frames (compute time does not depend on content). The full editor runs (method --method), so the
numbers include joint keyframe attention, propagation and injection. Writes one JSON file.
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
    ap.add_argument("--method", default="ours")
    ap.add_argument("--crops", help="a prepped crops folder (data/prepped/<vid>/crops) to extend")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", required=True)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from ipfacediff.diffusion import models as M
    from ipfacediff.diffusion.branches import BranchSet
    from ipfacediff.diffusion.inversion import CropFrames
    from ipfacediff.diffusion.pipeline import EditConfig
    from ipfacediff.diffusion.timing import hardware_info, synthetic_frames
    from ipfacediff.editing import Engine
    from ipfacediff.editing.timing import timing_table
    from ipfacediff.fsio import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = M.resolve_device(args.device), M.resolve_dtype(args.dtype)
    size = args.size or (64 if args.arch == "tiny" else 512)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.arch == "tiny":
            folder = args.models or Path(tmp) / "base"
            if not args.models:
                M.build_tiny(folder, seed=args.seed, sample_size=size)
            comps = M.load_components(folder, device, dtype)
        else:
            comps = M.build_true_size(args.seed, dtype, device, sample_size=size)
        build_s = time.perf_counter() - t0
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
        cfg = EditConfig(steps=args.steps, batch_size=args.batch_size, keyframe_interval=args.keyframe_interval, methods=[args.method])
        rows = timing_table(Engine(comps, BranchSet(base=comps.unet)), clip, args.frames, cfg, args.steps, method=args.method,
                            seed=args.seed, invert_batch_size=args.batch_size, workdir=tmp, progress=not args.no_progress)
    n_unet = sum(p.numel() for p in comps.unet.parameters())
    result = {
        "arch": args.arch,
        "weights": "random",
        "unet_params": n_unet,
        "dtype": str(dtype).removeprefix("torch."),
        "size": size,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "keyframe_interval": args.keyframe_interval,
        "method": args.method,
        "frames_source": source,
        "build_s": round(build_s, 2),
        "hardware": hardware_info(device),
        "command": "python benchmarks/edit_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "rows": rows,
    }
    write_json(args.out, result)
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
