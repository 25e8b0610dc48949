"""data_card stage: `python stages/data_card.py [--params params.yaml] MEDIA PREPPED FACES OUT_MD PLOTS_DIR`.

Writes reports/data_card.md (per video: frames, fps, size, faces found, crop jitter before/after
smoothing) and one crop-track PNG per video under PLOTS_DIR (reports/plots/data_card/).
"""

from __future__ import annotations

import argparse
import sys

from ipfacediff.errors import InputError
from ipfacediff.layout import DAG
from ipfacediff.report.data_card import build_data_card
from ipfacediff.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("media_dir", nargs="?", default=str(DAG.media))
    ap.add_argument("prepped_dir", nargs="?", default=str(DAG.prepped))
    ap.add_argument("faces_dir", nargs="?", default=str(DAG.faces))
    ap.add_argument("out_md", nargs="?", default=str(DAG.reports / "data_card.md"))
    ap.add_argument("plots_dir", nargs="?", default=str(DAG.reports / "plots" / "data_card"))
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.params)
        build_data_card(args.media_dir, args.prepped_dir, args.faces_dir, args.out_md, args.plots_dir,
                        settings.profile)
    except InputError as e:
        print(f"data_card: error: {e}", file=sys.stderr)
        return 2
    print(f"data_card: {args.out_md}, plots in {args.plots_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
