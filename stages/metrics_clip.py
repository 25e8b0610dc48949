"""metrics_clip stage: `python stages/metrics_clip.py [--params params.yaml] [--prepped DIR]
[--edits DIR] [--imported DIR] [--out DIR]`.

Text-frame CLIP score and directional CLIP score of every edit (CLIP from metrics.clip; random
weights in the sample profile, labelled so). Writes OUT/clip.json and OUT/clip_videos.csv; with no
CLIP folder it writes clip.json saying so.
"""

from __future__ import annotations

import sys

from ipfacediff.errors import InputError
from ipfacediff.metrics.outputs import stage_args, stage_inputs


def main(argv: list[str] | None = None) -> int:
    args = stage_args(__doc__, argv)
    try:
        from ipfacediff.fsio import write_json
        from ipfacediff.metrics.evaluate import run_clip
        from ipfacediff.metrics.outputs import log_flat, provenance, write_csv
        from ipfacediff.tracking import start_run

        settings, cfg, items, originals = stage_inputs(args)
        if not items:
            raise InputError(args.edits, "no edited videos found (expected <method>/<prompt>/<vid>.mp4)")
        from ipfacediff.diffusion.models import resolve_device

        device = str(resolve_device(settings.device))
        res = run_clip(items, originals, cfg, device=device, progress=True)
        summary = provenance(settings.profile) | {k: v for k, v in res.items() if k != "videos"}
        with start_run("metrics_clip", settings.as_params()) as run:
            log_flat(run, "clip", res["methods"])
        write_csv(f"{args.out}/clip_videos.csv", res["videos"])
        write_json(f"{args.out}/clip.json", summary)
    except InputError as e:
        print(f"metrics_clip: error: {e}", file=sys.stderr)
        return 2
    label = res.get("clip", res.get("reason"))
    for method, v in res["methods"].items():
        print(f"metrics_clip [{summary['profile']}] {method}: CLIP {v['clip_score']:.2f} "
              f"directional {v['directional_clip']:.3f} ({label})")
    if not res["methods"]:
        print(f"metrics_clip [{summary['profile']}]: {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
