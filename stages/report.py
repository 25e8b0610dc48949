"""report stage: `python stages/report.py [--params params.yaml] [--metrics DIR] [--timing FILE]
[--prepped DIR] [--edits DIR] [--imported DIR] [--tables DIR] [--plots DIR] [--videos DIR]`.

Tables 1-3 beside the paper's published numbers (src/ipfacediff/data/paper_numbers.yaml) as
Markdown, CSV and LaTeX under TABLES (plus tables.md with all three); plots (PNG + CSV for
`dvc plots`) under PLOTS; one side-by-side video (original | each method) per clip and prompt
under VIDEOS (report.side_by_side). Captions name the profile and models; in `sample` they say
the numbers come from random-weight models and are not results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ipfacediff.errors import InputError
from ipfacediff.layout import DAG
from ipfacediff.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics", default=str(DAG.metrics))
    ap.add_argument("--timing", default=str(DAG.timing))
    ap.add_argument("--prepped", default=str(DAG.prepped))
    ap.add_argument("--edits", default=str(DAG.edits))
    ap.add_argument("--imported", default=str(DAG.imported))
    ap.add_argument("--tables", default=str(DAG.tables))
    ap.add_argument("--plots", default=str(DAG.result_plots))
    ap.add_argument("--videos", default=str(DAG.side_by_side))
    args = ap.parse_args(argv)
    try:
        from ipfacediff.report.build import build_plots, build_tables, build_videos, log_report
        from ipfacediff.tracking import edits_inputs, start_run

        settings = load_settings(args.params)
        report = settings.report
        built = build_tables(Path(args.metrics), Path(args.timing), Path(args.tables))
        plots = build_plots(built, Path(args.metrics), Path(args.plots), settings.metrics.plot_recognizer)
        videos = build_videos(Path(args.prepped), {"engine": Path(args.edits), "imported": Path(args.imported)},
                              Path(args.videos), report.side_by_side_height,
                              enabled=report.side_by_side)
        with start_run("report", settings.as_params(), uses=edits_inputs(args.edits),
                       produces={"report": ("report", Path(args.tables).parent)}) as run:
            log_report(run, built, plots)
    except InputError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    profile = built["identity"].get("profile")
    print(f"report [{profile}]: tables in {args.tables} ({', '.join(t.name for t in built['tables'])}), "
          f"{len(plots)} plot files in {args.plots}, {len(videos)} side-by-side videos in {args.videos}")
    if built["identity"].get("warning"):
        print(f"report [{profile}]: {built['identity']['warning']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
