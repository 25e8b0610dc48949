"""`ipfacediff serve`: the local web app (app/web.py) on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

from .settings_args import add_setting_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="local web app: preview, queue and download face edits")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--out-dir", default="app_outputs", help="where finished edits are written (one folder per job)")
    p.add_argument("--samples", default=None, help="folder of videos offered in the page (default: data/media/videos)")
    p.add_argument("--models", default=None)
    p.add_argument("--branches", default=None)
    p.add_argument("--params", default=None)
    add_setting_arguments(p, only={"steps", "device"})  # the page's defaults for a full run (settings.py cli())
    p.set_defaults(func=run_serve)


def run_serve(args) -> int:
    from pathlib import Path

    from ..app.engine import EditOptions
    from ..app.web import serve
    from ..config import ROOT
    from ..errors import InputError
    from ..video import VIDEO_SUFFIXES

    folder = Path(args.samples) if args.samples else ROOT / "data" / "media" / "videos"
    if args.samples and not folder.is_dir():
        raise InputError(folder, "samples folder not found")
    samples = sorted(p for p in folder.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES | {".mpg"}) if folder.is_dir() else []
    defaults = EditOptions(steps=args.steps, models=args.models, branches=args.branches, params=args.params, device=args.device)
    print(f"ipfacediff serve: http://{args.host}:{args.port} (outputs in {Path(args.out_dir).resolve()})")
    serve(args.host, args.port, Path(args.out_dir), samples, defaults)
    return 0
