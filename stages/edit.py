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

from ipfacediff.errors import InputError
from ipfacediff.layout import DAG
from ipfacediff.registry import method_names
from ipfacediff.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", required=True, choices=method_names())
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepped", default=str(DAG.prepped))
    ap.add_argument("--inversions", default=str(DAG.inversions))
    ap.add_argument("--models", default=str(DAG.base_model))
    ap.add_argument("--branches", default=str(DAG.branches), help="holds identity/ and directional/ (absent -> base weights)")
    ap.add_argument("--prompts", default=None, help="edit-prompt file (default data/prompts/edits.yaml)")
    ap.add_argument("--out", default=str(DAG.edits))
    args = ap.parse_args(argv)
    try:
        from ipfacediff.editing import run_edit_stage

        done = run_edit_stage(load_settings(args.params), args.method, args.prepped, args.inversions, args.models,
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
