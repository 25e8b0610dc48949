"""Stage `timing`: wall time and peak memory of inversion + editing against video length (Table 2).

python stages/timing.py [--params params.yaml] [--prepped data/prepped] [--models models/base]
    [--branches models/branches] [--out reports/metrics/timing.json]
A real prepped clip (timing.video, else the first) is extended by ping-pong to each of timing.frames
and inverted + edited by the engine the edit stage loads (`Engine.load`, `engine.pipeline`; invert.*,
edit.* parameters, method timing.method): `ipfacediff.editing.timing`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ipfacediff.errors import InputError
from ipfacediff.layout import DAG, crops_dir, prepped_videos
from ipfacediff.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepped", default=str(DAG.prepped))
    ap.add_argument("--models", default=str(DAG.base_model))
    ap.add_argument("--branches", default=str(DAG.branches))
    ap.add_argument("--out", default=str(DAG.timing))
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.params)
        from ipfacediff.diffusion.inversion import CropFrames
        from ipfacediff.diffusion.timing import hardware_info
        from ipfacediff.editing import Engine, branch_dirs
        from ipfacediff.editing.timing import timing_table
        from ipfacediff.fsio import write_json
        from ipfacediff.tracking import start_run

        cfg, icfg, ecfg = settings.timing, settings.invert, settings.edit
        prepped = Path(args.prepped)
        videos = prepped_videos(prepped, required=False)
        vid = cfg.video or (videos[0] if videos else None)
        if vid is None or vid not in videos:
            raise InputError(prepped, f"prepped video {vid!r} not found (expected <vid>/crops/*.png and <vid>/meta.json)")
        clip = CropFrames(crops_dir(prepped, vid))[:]
        engine = Engine.load(args.models, branch_dirs(args.branches, ("identity", "directional")), settings.device,
                             settings.models.dtype, seed=settings.seed)
        comps, branches = engine.components, engine.branches
        fps = float(settings.data.fps or 10)
        with start_run("timing", settings.as_params()) as run:
            rows = timing_table(engine, clip, list(cfg.frames), ecfg, icfg.steps, prompt=cfg.prompt, method=cfg.method,
                                fps=fps, seed=settings.seed, invert_batch_size=icfg.batch_size)
            for r in rows:
                run.log({k: v for k, v in r.items() if isinstance(v, (int, float))}, step=r["frames"])
        write_json(args.out, {
            "profile": settings.profile,
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
