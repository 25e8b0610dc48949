"""The report stage's work: Tables 1-3 (md/csv/tex), plots (png + csv), side-by-side videos."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from ..errors import InputError
from ..fsio import atomic_dir, write_text
from .tables import load_paper_numbers, table1, table2, table3, to_markdown, write_table

log = logging.getLogger(__name__)


def _json(path: Path, required: bool = True) -> dict | None:
    if not path.is_file():
        if required:
            raise InputError(path, "not found (run the stage that writes it first)")
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e})") from e


def _csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(path, "not found (run metrics_identity first)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def build_tables(metrics_dir: Path, timing_path: Path, out_dir: Path) -> dict:
    paper = load_paper_numbers()
    identity = _json(metrics_dir / "identity.json")
    temporal = _json(metrics_dir / "temporal.json")
    clip = _json(metrics_dir / "clip.json", required=False)
    timing = _json(timing_path, required=False)
    tables = [table1(identity, paper), table2(timing, paper, identity), table3(temporal, clip, paper)]
    for t in tables:
        write_table(t, out_dir)
    write_text(out_dir / "tables.md", "# Results beside the paper\n\n" + "\n".join(to_markdown(t) for t in tables))
    return {"tables": tables, "identity": identity, "temporal": temporal, "clip": clip, "timing": timing, "paper": paper}


def build_plots(built: dict, metrics_dir: Path, out_dir: Path, recognizer: str | None) -> list[Path]:
    from .plots import identity_over_time, time_vs_frames

    ident = built["identity"]
    subtitle = f"profile {ident.get('profile')}" + (" - random-weight models: not results" if ident.get("warning") else "")
    recs = [r["name"] for r in ident.get("recognizers", [])]
    rec = recognizer or (recs[0] if recs else "")
    if recognizer and recognizer not in recs:
        raise InputError("params.yaml", f"metrics.plot_recognizer {recognizer!r} was not measured ({', '.join(recs)})")
    with atomic_dir(out_dir) as tmp:
        time_vs_frames(built["timing"], built["paper"], tmp, subtitle)
        identity_over_time(_csv(metrics_dir / "identity_frames.csv"), rec, tmp, subtitle)
    return sorted(out_dir.iterdir())


def build_videos(prepped: Path, edit_roots: dict[str, Path], out_dir: Path, height: int, enabled: bool = True) -> list[Path]:
    """One side-by-side video per (original video, prompt): original | every method with that edit
    (an empty folder when disabled, so the stage output always exists)."""
    from ..metrics.clips import load_clip
    from ..metrics.evaluate import Originals, discover_edits, method_order
    from .side_by_side import write_side_by_side

    items = discover_edits(edit_roots) if enabled else []
    originals = Originals(prepped)
    groups: dict[tuple[str, str], dict] = {}
    for it in items:
        groups.setdefault((it.vid, it.prompt), {})[it.method] = it.path
    written = []
    with atomic_dir(out_dir) as tmp:
        for (vid, prompt), by_method in sorted(groups.items()):
            edits = {m: load_clip(by_method[m], vid) for m in method_order(list(by_method))}
            write_side_by_side(tmp / f"{vid}__{prompt}.mp4", originals.get(vid, by_method[next(iter(by_method))]),
                               edits, height)
            written.append(out_dir / f"{vid}__{prompt}.mp4")
    return written


def log_report(run, built: dict, plot_paths: list[Path]) -> None:
    import pandas as pd

    for t in built["tables"]:
        df = pd.DataFrame([[("" if v is None else str(v)) for v in r] for r in t.values()], columns=t.header)
        run.log_table(f"report/{t.name}", df)
    for p in plot_paths:
        if p.suffix == ".png":
            run.log_image(f"report/{p.stem}", str(p))
