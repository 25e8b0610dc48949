"""caption stage: `python stages/caption.py [--params params.yaml] [FACES_DIR [PREPPED_DIR [OUT_DIR]]]`.

Captions every training face (FACES_DIR/index.csv) and the middle crop of every prepped video
(PREPPED_DIR/<vid>/crops/) with BLIP-2 (`caption.captioner: blip2`, paper) or the measured fallback
captioner (sample). Writes OUT_DIR/faces.jsonl, videos.jsonl ({"image"|"video", "caption", "source"})
and summary.json (crops without a face are skipped and listed there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ipfacediff.errors import InputError
from ipfacediff.layout import DAG
from ipfacediff.settings import load_settings
from ipfacediff.train.captioning import make_captioner, run_caption_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("faces_dir", nargs="?", default=str(DAG.faces))
    ap.add_argument("prepped_dir", nargs="?", default=str(DAG.prepped))
    ap.add_argument("out_dir", nargs="?", default=str(DAG.captions))
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.params)
        cfg = settings.caption
        captioner = make_captioner(cfg, device=settings.device, dtype=settings.models.dtype)
        from ipfacediff.tracking import start_run

        with start_run("caption", settings.as_params(), produces={"captions": ("captions", args.out_dir)}) as run:
            s = run_caption_stage(args.faces_dir, args.prepped_dir, args.out_dir, captioner, settings.profile,
                                  cfg.batch_size)
            run.summary({"captioner": s["captioner"], "faces": s["faces"]["n"], "videos": s["videos"]["n"]})
            if run.enabled and s["faces"]["n"]:  # every caption beside its image, as the training and inversion stages read them
                import pandas as pd

                run.log_table("captions", pd.read_json(Path(args.out_dir) / "faces.jsonl", lines=True))
    except InputError as e:
        print(f"caption: error: {e}", file=sys.stderr)
        return 2
    print(f"caption [{s['profile']}] with {s['captioner']}: {s['faces']['n']} faces ({s['faces']['n_skipped']} skipped), "
          f"{s['videos']['n']} videos ({s['videos']['n_skipped']} skipped) -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
