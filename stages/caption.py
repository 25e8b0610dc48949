"""caption stage: `python stages/caption.py [--params params.yaml] [FACES_DIR [PREPPED_DIR [OUT_DIR]]]`.

Captions every training face (FACES_DIR/index.csv) and the middle crop of every prepped video
(PREPPED_DIR/<vid>/crops/) with BLIP-2 (`caption.captioner: blip2`, paper) or the measured fallback
captioner (sample). Writes OUT_DIR/faces.jsonl, videos.jsonl ({"image"|"video", "caption", "source"})
and summary.json (crops without a face are skipped and listed there).
"""

from __future__ import annotations

import argparse
import sys

from ipfacediff.config import load_params, section
from ipfacediff.errors import InputError
from ipfacediff.train.captioning import CaptionConfig, make_captioner, run_caption_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("faces_dir", nargs="?", default="data/faces")
    ap.add_argument("prepped_dir", nargs="?", default="data/prepped")
    ap.add_argument("out_dir", nargs="?", default="data/captions")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        cfg = section(params, CaptionConfig, "caption")
        captioner = make_captioner(cfg, device=str(params.get("device", "auto")), dtype=str(params.get("models", {}).get("dtype", "float16")))
        s = run_caption_stage(args.faces_dir, args.prepped_dir, args.out_dir, captioner, str(params.get("profile")), cfg.batch_size)
    except InputError as e:
        print(f"caption: error: {e}", file=sys.stderr)
        return 2
    print(f"caption [{s['profile']}] with {s['captioner']}: {s['faces']['n']} faces ({s['faces']['n_skipped']} skipped), "
          f"{s['videos']['n']} videos ({s['videos']['n_skipped']} skipped) -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
