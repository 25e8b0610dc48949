"""metrics_temporal stage: `python stages/metrics_temporal.py [--params params.yaml] [--prepped DIR]
[--edits DIR] [--imported DIR] [--out DIR]`.

Paper Table 3: warp error E_warp (x1000, RGB in [0, 1], see ipfacediff.metrics.temporal) of every
edit with optical flow from its original (metrics.flow: RAFT when its weights are local, else
OpenCV DIS, named in the output), per method, with the originals' own warp error as reference.
Writes OUT/temporal.json and OUT/temporal_videos.csv.
"""

from __future__ import annotations

import sys

from ipfacediff.errors import InputError
from ipfacediff.metrics.outputs import stage_args, stage_inputs


def main(argv: list[str] | None = None) -> int:
    args = stage_args(__doc__, argv)
    try:
        from ipfacediff.fsio import write_json
        from ipfacediff.metrics.evaluate import run_temporal
        from ipfacediff.metrics.outputs import log_flat, provenance, write_csv
        from ipfacediff.metrics.temporal import WARP_SCALE
        from ipfacediff.tracking import start_run

        settings, cfg, items, originals = stage_inputs(args)
        from ipfacediff.diffusion.models import resolve_device

        device = str(resolve_device(settings.device))
        res = run_temporal(items, originals, cfg, device=device, progress=True)
        summary = provenance(settings.profile) | {
            "flow": res["flow"], "scale": f"E_warp x {WARP_SCALE:g}: squared RGB L2 in [0, 1], mean over "
            "non-occluded pixels (forward-backward check), then over frame pairs; flow from the original",
            "methods": res["methods"], "original_reference": res["original_reference"],
            "originals": {k: {kk: vv for kk, vv in v.items() if kk != "per_pair"} for k, v in res["originals"].items()}}
        with start_run("metrics_temporal", settings.as_params()) as run:
            log_flat(run, "temporal", res["methods"] | {"original": res["original_reference"]})
        write_csv(f"{args.out}/temporal_videos.csv", res["videos"])
        write_json(f"{args.out}/temporal.json", summary)
    except InputError as e:
        print(f"metrics_temporal: error: {e}", file=sys.stderr)
        return 2
    print(f"metrics_temporal [{summary['profile']}] flow: {res['flow']}")
    for method, v in list(res["methods"].items()) + [("original (reference)", res["original_reference"])]:
        print(f"metrics_temporal [{summary['profile']}] {method}: E_warp {v['warp_error']:.4f}" if v["warp_error"] is not None
              else f"metrics_temporal [{summary['profile']}] {method}: E_warp n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main())
