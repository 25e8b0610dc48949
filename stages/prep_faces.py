"""prep_faces stage: `python stages/prep_faces.py [--params params.yaml] MEDIA_DIR OUT_DIR`.

Aligned training faces at data.crop_size: sample = every data.face_every-th frame of the media
videos + the stills; paper = the CelebA-HQ folder. Writes OUT_DIR/images/*.png, index.csv and
summary.json (images without a usable face are skipped and listed there).
"""

from __future__ import annotations

import argparse
import sys

from ipfacediff.errors import InputError
from ipfacediff.face.prep import prep_faces
from ipfacediff.layout import DAG
from ipfacediff.media import load_manifest
from ipfacediff.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("media_dir", nargs="?", default=str(DAG.media))
    ap.add_argument("out_dir", nargs="?", default=str(DAG.faces))
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.params)
        _, entries = load_manifest(args.media_dir)
        summary = prep_faces(entries, args.out_dir, settings.data, settings.profile)
    except InputError as e:
        print(f"prep_faces: error: {e}", file=sys.stderr)
        return 2
    print(f"prep_faces [{summary['profile']}]: {summary['n_images']} faces at {summary['crop_size']} px, "
          f"{summary['n_skipped']} skipped -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
