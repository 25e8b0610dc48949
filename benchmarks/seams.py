"""Seam report of bounded keyframe attention: warp error of frame pairs that cross a keyframe-group
boundary against pairs inside a group, bounded mode and (control) exact mode on the same pairs.

    python benchmarks/seams.py --models models/base --branches models/branches --prepped data/prepped \\
        --inversions data/inversions --out benchmarks/results/seams_sample.json

Real clips (the sample profile's prepped face crops of ../shared/media and their DDIM inversions),
method `ours`, bounded mode with small groups so a short clip has several boundaries. Groups hold
G keyframes of one per `keyframe_interval` frames, so boundaries sit at frames that are multiples of
G x keyframe_interval; pair (t, t+1) crosses one when t+1 is such a multiple. Warp error is the
project's metric (metrics/temporal.py: flow from the original clip, forward-backward occlusion mask,
x1000). With the sample profile's RANDOM-WEIGHT tiny model this is a mechanism check (does the group
structure show up in temporal consistency?), not a quality result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MODES = ("exact", "bounded")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models/base")
    ap.add_argument("--branches", default="models/branches")
    ap.add_argument("--prepped", default="data/prepped")
    ap.add_argument("--inversions", default="data/inversions")
    ap.add_argument("--videos", nargs="*", help="video ids (default: every inverted video)")
    ap.add_argument("--prompt", default="a photo of a person wearing eyeglasses")
    ap.add_argument("--keyframe-interval", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=2)
    ap.add_argument("--anchors", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    return ap.parse_args(argv)


def crossing_pairs(n_frames: int, group_frames: int) -> list[bool]:
    """For each pair (t, t+1): whether a group boundary (a multiple of `group_frames`) lies between them."""
    return [(t + 1) % group_frames == 0 for t in range(n_frames - 1)]


def split_means(per_pair: list[float], crossing: list[bool]) -> dict:
    import numpy as np

    cross = [e for e, c in zip(per_pair, crossing) if c and not np.isnan(e)]
    inside = [e for e, c in zip(per_pair, crossing) if not c and not np.isnan(e)]
    mean = lambda xs: round(float(np.mean(xs)), 4) if xs else None  # noqa: E731
    std = lambda xs: round(float(np.std(xs, ddof=1)), 4) if len(xs) > 1 else None  # noqa: E731
    return {"crossing_pairs": len(cross), "inside_pairs": len(inside), "crossing_mean": mean(cross), "inside_mean": mean(inside),
            "crossing_std": std(cross), "inside_std": std(inside),
            "crossing_over_inside": round(mean(cross) / mean(inside), 4) if cross and inside and mean(inside) else None}


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from ipfacediff.diffusion.inversion import InversionCache
    from ipfacediff.diffusion.pipeline import EditConfig
    from ipfacediff.editing.engine import Engine, branch_dirs
    from ipfacediff.face.prep import load_prepped
    from ipfacediff.fsio import write_json
    from ipfacediff.portable import portable_record
    from ipfacediff.metrics.temporal import flow_estimator, warp_error
    from ipfacediff.registry import get_method

    t_all = time.perf_counter()
    method = get_method("ours")
    engine = Engine.load(args.models, branch_dirs(args.branches, method.branches), "cpu", "float32", seed=args.seed)
    index = json.loads((Path(args.inversions) / "index.json").read_text())
    videos = args.videos or sorted(index["videos"])
    flow = flow_estimator("dis")
    group_frames = args.group_size * args.keyframe_interval
    rows, pooled = [], {m: ([], []) for m in MODES}
    for vid in videos:
        entry = index["videos"][vid]
        cache = InversionCache(Path(args.inversions) / entry["file"])
        source, _, _ = load_prepped(Path(args.prepped) / vid)
        crossing = crossing_pairs(len(source), group_frames)
        row = {"video": vid, "frames": len(source), "steps": cache.steps,
               "boundaries_at_frames": list(range(group_frames, len(source), group_frames))}
        for mode in MODES:
            cfg = EditConfig(steps=cache.steps, keyframe_interval=args.keyframe_interval, keyframe_attention=mode,
                             keyframe_group_size=args.group_size, keyframe_anchors=args.anchors)
            pipe = engine.pipeline(cfg, progress=False)
            out = pipe(args.prompt, cache, method="ours", generator=torch.Generator().manual_seed(args.seed))
            res = warp_error(out.frames, flow, source=source)
            row[mode] = {"keyframe_attention": out.info["keyframe_attention"], "warp_error": round(res.warp_error, 4),
                         "per_pair": [round(e, 4) for e in res.per_pair], **split_means(res.per_pair, crossing)}
            pooled[mode][0].extend(res.per_pair)
            pooled[mode][1].extend(crossing)
        rows.append(row)
        brief = {m: {k: row[m][k] for k in ("crossing_mean", "inside_mean", "crossing_over_inside")} for m in MODES}
        print(json.dumps({"video": vid, **brief}), flush=True)
    result = {
        "command": "python benchmarks/seams.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "label": "RANDOM-WEIGHT sample-profile tiny model: a mechanism check of group seams, not a quality result",
        "models": engine.record(), "method": "ours", "prompt": args.prompt, "keyframe_interval": args.keyframe_interval,
        "group_size": args.group_size, "anchors": args.anchors, "group_boundary_every_frames": group_frames, "seed": args.seed,
        "flow": flow.description + ", from the original clip",
        "pooled": {m: split_means(*pooled[m]) for m in MODES}, "videos": rows, "wall_s": round(time.perf_counter() - t_all, 1),
    }
    write_json(args.out, portable_record(result))  # no machine paths in committed results
    print(json.dumps(result["pooled"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
