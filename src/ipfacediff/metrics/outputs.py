"""Writing metrics: atomic CSV, the provenance block every output carries, W&B logging."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..fsio import write_text
from ..layout import DAG, Layout

SAMPLE_WARNING = ("sample profile: the edits come from random-weight diffusion models, so these numbers "
                  "exercise the pipeline and are NOT results")


def write_csv(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """Rows (dicts) as CSV, atomically; columns default to the union of keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in columns})
    write_text(path, buf.getvalue())


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if v != v else round(v, 6)
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return "" if v is None else v


def model_info(folder: str | Path) -> dict:
    """models/<name>/ipfacediff.json (what the models stage wrote), or a note that it is absent."""
    p = Path(folder) / "ipfacediff.json"
    if not p.is_file():
        return {"path": str(folder), "note": "no ipfacediff.json (models stage not run)"}
    info = json.loads(p.read_text())
    return {"path": str(folder), "source": info.get("source"), "weights": info.get("weights"),
            "spec": info.get("spec"), "sha256": (info.get("sha256") or {}).get("combined"), "note": info.get("note")}


def provenance(profile: str, layout: Layout = DAG) -> dict:
    """Profile and the diffusion/CLIP models the edits were made with (plus the sample warning)."""
    out = {"profile": profile, "diffusion_model": model_info(layout.base_model),
           "clip_model": model_info(layout.clip_model)}
    if profile == "sample" or out["diffusion_model"].get("weights") == "random":
        out["warning"] = SAMPLE_WARNING
    return out


def log_flat(run, prefix: str, methods: dict) -> dict:
    """Log every numeric leaf of {method: {...}} as prefix/method/.../key to the W&B run."""
    flat: dict[str, float] = {}

    def walk(d, key):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{key}/{k}")
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                flat[f"{key}/{k}"] = v

    walk(methods, prefix)
    run.log(flat)
    run.summary(flat)
    return flat


def stage_args(doc: str, argv: list[str] | None = None):
    """The command line shared by the metrics_* stages (params, originals, edits, imported edits, out)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepped", default=str(DAG.prepped))
    ap.add_argument("--edits", default=str(DAG.edits))
    ap.add_argument("--imported", default=str(DAG.imported))
    ap.add_argument("--out", default=str(DAG.metrics))
    return ap.parse_args(argv)


def stage_inputs(args):
    """(settings, metrics settings, edited items, originals) for a metrics_* stage."""
    from ..settings import load_settings
    from .evaluate import Originals, discover_edits

    settings = load_settings(args.params)
    items = discover_edits({"engine": args.edits, "imported": args.imported})
    return settings, settings.metrics, items, Originals(args.prepped)
