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

from ipfacediff.config import load_params, section
from ipfacediff.errors import InputError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepped", default="data/prepped")
    ap.add_argument("--models", default="models/base")
    ap.add_argument("--branch", default="models/branches/identity", help="identity branch folder (absent -> base weights)")
    ap.add_argument("--captions", default="data/captions/videos.jsonl")
    ap.add_argument("--out", default="data/inversions")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        import torch

        from ipfacediff.diffusion.branches import load_branches
        from ipfacediff.diffusion.inversion import BASE_SUBDIR, InvertConfig, branch_fingerprint, invert_all
        from ipfacediff.diffusion.models import ModelsConfig, load_components
        from ipfacediff.fsio import write_json
        from ipfacediff.tracking import start_run

        cfg = section(params, InvertConfig, "invert")
        mcfg = section(params, ModelsConfig, "models")
        torch.manual_seed(int(params.get("seed", 0)))
        comps = load_components(args.models, params.get("device", "cpu"), mcfg.dtype)
        branch = Path(args.branch)
        branches = load_branches(comps.unet, {"identity": branch if branch.exists() else None})
        with start_run("invert", params, uses={"models-base": ("model", args.models), "branch-identity": ("branch", branch)},
                       produces={"inversions": ("inversions", args.out)}) as run:
            videos = invert_all(comps, branches, args.prepped, args.out, cfg, args.captions)
            base_dir = Path(args.out) / BASE_SUBDIR
            if cfg.base_for_tokenflow and branch_fingerprint(branches, "identity") != "base":
                base = load_branches(comps.unet, {"identity": None})  # adapters off: the base weights
                invert_all(comps, base, args.prepped, base_dir, cfg, args.captions)
            elif base_dir.is_dir():  # the identity cache is the base one (or not wanted): drop stale copies
                shutil.rmtree(base_dir)
            run.summary({"videos": len(videos), "frames": sum(v["n_frames"] for v in videos.values())})
        write_json(Path(args.out) / "index.json", {
            "profile": params.get("profile"),
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
