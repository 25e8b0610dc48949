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

from ipfacediff.config import load_params
from ipfacediff.errors import InputError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics", default="reports/metrics")
    ap.add_argument("--timing", default="reports/metrics/timing.json")
    ap.add_argument("--prepped", default="data/prepped")
    ap.add_argument("--edits", default="data/edits")
    ap.add_argument("--imported", default="data/imported")
    ap.add_argument("--tables", default="reports/tables")
    ap.add_argument("--plots", default="reports/plots/results")
    ap.add_argument("--videos", default="reports/videos")
    args = ap.parse_args(argv)
    try:
        from ipfacediff.report.build import build_plots, build_tables, build_videos, log_report
        from ipfacediff.tracking import start_run

        params = load_params(args.params)
        metrics, report = params.get("metrics", {}), params.get("report", {})
        built = build_tables(Path(args.metrics), Path(args.timing), Path(args.tables))
        plots = build_plots(built, Path(args.metrics), Path(args.plots), metrics.get("plot_recognizer"))
        videos = build_videos(Path(args.prepped), {"engine": Path(args.edits), "imported": Path(args.imported)},
                              Path(args.videos), int(report.get("side_by_side_height", 128)),
                              enabled=bool(report.get("side_by_side", True)))
        with start_run("report", params, uses={"edits": ("edits", args.edits)},
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
