"""Stage `edit`: one method over every edit prompt x prepped video (DVC fans out over methods).

python stages/edit.py --method M [--params params.yaml] [--prepped data/prepped] [--inversions data/inversions]
    [--models models/base] [--branches models/branches] [--prompts data/prompts/edits.yaml] [--out data/edits]
Writes OUT/<method>/<prompt>/<vid>.mp4 (edited aligned crops at the video's exact fps) and <vid>.json
(resolved config, models and branch sources, seed, keyframes, timings). Items whose record matches the
current inputs are kept; outputs of prompts/videos no longer configured are removed.
"""

from __future__ import annotations

import argparse
import sys

from ipfacediff.config import load_params
from ipfacediff.errors import InputError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepped", default="data/prepped")
    ap.add_argument("--inversions", default="data/inversions")
    ap.add_argument("--models", default="models/base")
    ap.add_argument("--branches", default="models/branches", help="holds identity/ and directional/ (absent -> base weights)")
    ap.add_argument("--prompts", default=None, help="edit-prompt file (default data/prompts/edits.yaml)")
    ap.add_argument("--out", default="data/edits")
    args = ap.parse_args(argv)
    try:
        from ipfacediff.diffusion.methods import run_edit_stage

        done = run_edit_stage(load_params(args.params), args.method, args.prepped, args.inversions, args.models,
                              args.branches, args.out, args.prompts)
    except InputError as e:
        print(f"edit: error: {e}", file=sys.stderr)
        return 2
    for item in done:
        print(f"edit [{item['profile']}] {item['method']}/{item['prompt']}/{item['video']}: {item['frames']} frames, "
              f"{item['status']} ({item['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
