"""prep_videos stage: `python stages/prep_videos.py [--params params.yaml] MEDIA_DIR OUT_DIR`.

Per manifest video: decode, resample to data.fps (nearest frame on the exact k/fps grid), cap at
data.max_seconds, track + align + smooth the face, write OUT_DIR/<vid>/{crops/,track.npz,meta.json}
(atomically per video) and OUT_DIR/index.json.
"""

from __future__ import annotations

import argparse
import sys

from ipfacediff.errors import InputError
from ipfacediff.face.prep import prep_videos
from ipfacediff.layout import DAG
from ipfacediff.media import load_manifest
from ipfacediff.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("media_dir", nargs="?", default=str(DAG.media))
    ap.add_argument("out_dir", nargs="?", default=str(DAG.prepped))
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.params)
        _, entries = load_manifest(args.media_dir)
        index = prep_videos(entries, args.out_dir, settings.data, settings.profile)
    except InputError as e:
        print(f"prep_videos: error: {e}", file=sys.stderr)
        return 2
    for v in index["videos"]:
        print(f"prep_videos [{index['profile']}]: {v['id']}: {v['frames']} frames at {v['fps']} fps, "
              f"face in {v['faces_found']}, interpolated {v['frames_interpolated']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
