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


def _metrics(metrics_dir: Path, name: str, required: bool = True) -> dict | None:
    """A metrics stage's full record: <name>.json (numbers) + <name>.info.json (provenance, notes)."""
    from ..metrics.outputs import read_metrics

    record = read_metrics(metrics_dir, name)
    if record is None and required:
        raise InputError(metrics_dir / f"{name}.json", "not found (run the stage that writes it first)")
    return record


def _csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(path, "not found (run metrics_identity first)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def build_tables(metrics_dir: Path, timing_path: Path, out_dir: Path) -> dict:
    paper = load_paper_numbers()
    identity = _metrics(metrics_dir, "identity")
    temporal = _metrics(metrics_dir, "temporal")
    clip = _metrics(metrics_dir, "clip", required=False)
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
        identity_over_time(_csv(metrics_dir / "identity_frames.csv"), rec, tmp, subtitle, _no_frames_reason(ident, rec))
    return sorted(out_dir.iterdir())


def _no_frames_reason(identity: dict, recognizer: str) -> str:
    """Why identity_frames.csv has no row for `recognizer`, from the identity record's counts."""
    per = [m.get(recognizer, {}) for m in identity.get("methods", {}).values() if isinstance(m, dict)]
    if not per:
        return "no edited video was measured"
    no_face, unpaired = sum(p.get("frames_no_face") or 0 for p in per), sum(p.get("frames_unpaired") or 0 for p in per)
    if no_face:
        why = " (edits of random-weight models are not faces)" if identity.get("warning") else ""
        return f"{recognizer} found no face in any of the {no_face} edited frames{why}"
    if unpaired:
        return f"none of the {unpaired} edited frames could be paired with an original frame by timestamp"
    return f"{recognizer} compared no frame"


def build_videos(prepped: Path, edit_roots: dict[str, Path], out_dir: Path, height: int, enabled: bool = True) -> list[Path]:
    """One side-by-side video per (original video, prompt): original | every method with that edit
    (an empty folder when disabled, so the stage output always exists)."""
    from ..metrics.clips import load_frame_clip
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
            edits = {m: load_frame_clip(by_method[m], vid) for m in method_order(list(by_method))}
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
