"""Stage `timing`: wall time and peak memory of inversion + editing against video length (Table 2).

python stages/timing.py [--params params.yaml] [--prepped data/prepped] [--models models/base]
    [--branches models/branches] [--out reports/metrics/timing.json]
A real prepped clip (timing.video, else the first) is extended by ping-pong to each of timing.frames
and inverted + edited with the real pipeline (invert.*, edit.* parameters, method timing.method).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ipfacediff.config import load_params, section
from ipfacediff.errors import InputError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepped", default="data/prepped")
    ap.add_argument("--models", default="models/base")
    ap.add_argument("--branches", default="models/branches")
    ap.add_argument("--out", default="reports/metrics/timing.json")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        import torch

        from ipfacediff.diffusion.branches import load_branches
        from ipfacediff.diffusion.inversion import CropFrames, InvertConfig
        from ipfacediff.diffusion.models import ModelsConfig, load_components
        from ipfacediff.diffusion.pipeline import EditConfig
        from ipfacediff.diffusion.timing import TimingConfig, hardware_info, timing_table
        from ipfacediff.fsio import write_json
        from ipfacediff.tracking import start_run

        cfg = section(params, TimingConfig, "timing")
        icfg, ecfg = section(params, InvertConfig, "invert"), section(params, EditConfig, "edit")
        prepped = Path(args.prepped)
        videos = sorted(p.name for p in prepped.iterdir() if (p / "crops").is_dir()) if prepped.is_dir() else []
        vid = cfg.video or (videos[0] if videos else None)
        if vid is None or vid not in videos:
            raise InputError(prepped, f"prepped video {vid!r} not found (expected <vid>/crops/*.png)")
        if not cfg.frames or min(cfg.frames) < 1:
            raise InputError(args.params, "timing.frames: expected a list of positive frame counts")
        clip = CropFrames(prepped / vid / "crops")[:]
        torch.manual_seed(int(params.get("seed", 0)))
        comps = load_components(args.models, params.get("device", "cpu"), section(params, ModelsConfig, "models").dtype)
        paths = {b: Path(args.branches) / b for b in ("identity", "directional")}
        branches = load_branches(comps.unet, {b: p if p.exists() else None for b, p in paths.items()})
        fps = float(params.get("data", {}).get("fps") or 10)
        with start_run("timing", params) as run:
            rows = timing_table(comps, branches, clip, list(cfg.frames), ecfg, icfg.steps, prompt=cfg.prompt, method=cfg.method,
                                fps=fps, seed=int(params.get("seed", 0)), invert_batch_size=icfg.batch_size)
            for r in rows:
                run.log({k: v for k, v in r.items() if isinstance(v, (int, float))}, step=r["frames"])
        write_json(args.out, {
            "profile": params.get("profile"),
            "hardware": hardware_info(comps.device),
            "models": {"base": comps.info, "branches": dict(branches.sources), "dtype": str(comps.dtype).removeprefix("torch.")},
            "config": {"video": vid, "fps": fps, "method": cfg.method, "prompt": cfg.prompt, "invert_steps": icfg.steps,
                       "edit_steps": ecfg.steps, "keyframe_interval": ecfg.keyframe_interval, "batch_size": ecfg.batch_size,
                       "size": list(clip.shape[1:3])},
            "note": ("random-weight models: times show how cost scales with length on this machine, not the paper's numbers"
                     if comps.info.get("weights") == "random" else "pretrained weights"),
            "rows": rows,
        })
        print(f"timing: {len(rows)} lengths -> {args.out}")
    except InputError as e:
        print(f"timing: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
