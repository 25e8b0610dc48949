"""Stage `invert`: DDIM-invert every prepped video with the identity branch, cached per video.

python stages/invert.py [--params params.yaml] [--prepped data/prepped] [--models models/base]
    [--branch models/branches/identity] [--captions data/captions/videos.jsonl] [--out data/inversions]
Writes data/inversions/<vid>.safetensors (reused when still valid: DVC `persist: true`) and index.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ipfacediff.errors import InputError
from ipfacediff.layout import BASE_SUBDIR, DAG
from ipfacediff.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepped", default=str(DAG.prepped))
    ap.add_argument("--models", default=str(DAG.base_model))
    ap.add_argument("--branch", default=str(DAG.branch("identity")), help="identity branch folder (absent -> base weights)")
    ap.add_argument("--captions", default=str(DAG.video_captions))
    ap.add_argument("--out", default=str(DAG.inversions))
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.params)
        from ipfacediff.diffusion.inversion import branch_fingerprint, invert_all
        from ipfacediff.editing import Engine
        from ipfacediff.fsio import write_json
        from ipfacediff.tracking import start_run

        cfg = settings.invert
        branch = Path(args.branch)
        engine = Engine.load(args.models, {"identity": branch if branch.exists() else None}, settings.device,
                             settings.models.dtype, seed=settings.seed)
        comps, branches = engine.components, engine.branches
        with start_run("invert", settings.as_params()) as run:
            videos = invert_all(comps, branches, args.prepped, args.out, cfg, args.captions)
            base_dir = Path(args.out) / BASE_SUBDIR
            if cfg.base_for_tokenflow and branch_fingerprint(branches, "identity") != "base":
                base = engine.with_branches({"identity": None}).branches  # adapters off: the base weights
                invert_all(comps, base, args.prepped, base_dir, cfg, args.captions)
            elif base_dir.is_dir():  # the identity cache is the base one (or not wanted): drop stale copies
                shutil.rmtree(base_dir)
            run.summary({"videos": len(videos), "frames": sum(v["n_frames"] for v in videos.values())})
        write_json(Path(args.out) / "index.json", {
            "profile": settings.profile,
            "models": comps.info,
            "identity_branch": branch_fingerprint(branches, "identity"),
            "steps": cfg.steps,
            "videos": videos,
        })
        print(f"invert: {len(videos)} videos -> {args.out}")
    except InputError as e:
        print(f"invert: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
