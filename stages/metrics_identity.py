"""metrics_identity stage: `python stages/metrics_identity.py [--params params.yaml] [--prepped DIR]
[--edits DIR] [--imported DIR] [--out DIR]`.

Paper Table 1 per method x recogniser (metrics.recognizers): cosine distance of the mean-frame
video embeddings (lower is better), R@1 and MRR of the original among the gallery (metrics.gallery,
index cached in metrics.gallery_cache), STIT's TL-ID / TG-ID. Writes OUT/identity.json (summary),
OUT/identity_videos.csv (per edit) and OUT/identity_frames.csv (per-frame similarity to the original).
"""

from __future__ import annotations

import sys

from ipfacediff.errors import InputError
from ipfacediff.metrics.outputs import stage_args, stage_inputs


def main(argv: list[str] | None = None) -> int:
    args = stage_args(__doc__, argv)
    try:
        from ipfacediff.fsio import write_json
        from ipfacediff.metrics.evaluate import run_identity
        from ipfacediff.metrics.outputs import log_flat, provenance, write_csv
        from ipfacediff.tracking import start_run

        settings, cfg, items, originals = stage_inputs(args)
        res = run_identity(items, originals, cfg, progress=True)
        summary = provenance(settings.profile) | {k: res[k] for k in ("recognizers", "gallery", "methods")} | {
            "conventions": "video embedding = unit mean of unit frame embeddings; cosine distance = 1 - cos; "
                           "ranks pessimistic on ties; frames without a face excluded and counted; "
                           "frames paired by timestamp"}
        with start_run("metrics_identity", settings.as_params()) as run:
            log_flat(run, "identity", res["methods"])
        write_csv(f"{args.out}/identity_videos.csv", res["videos"])
        write_csv(f"{args.out}/identity_frames.csv", res["frames"])
        write_json(f"{args.out}/identity.json", summary)
    except InputError as e:
        print(f"metrics_identity: error: {e}", file=sys.stderr)
        return 2
    g = res["gallery"]
    sizes = {k: v["size"] for k, v in g.items() if isinstance(v, dict) and "size" in v}
    print(f"metrics_identity [{summary['profile']}] gallery: {sizes or 'none (no retrieval)'}"
          + (f"; missing sources: {', '.join(g['missing_sources'])}" if g["missing_sources"] else ""))
    for method, by_rec in res["methods"].items():
        cells = [f"{r}: cos {_f(v['cosine_distance'])} R@1 {_f(v.get('r_at_1'))} MRR {_f(v.get('mrr'))}"
                 for r, v in by_rec.items() if r != "origin"]
        print(f"metrics_identity [{summary['profile']}] {method}: " + "; ".join(cells))
    return 0


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    sys.exit(main())
