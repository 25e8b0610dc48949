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


# Metrics JSON layout: `<name>.json` holds numbers only (what `dvc metrics show/diff` reads: the measured
# results under these keys); `<name>.info.json` holds everything else (profile, models, hashes,
# warnings, conventions, per-method origin). Each leaf is in exactly one of the two files, and
# `read_metrics` merges them back into the stage's full record.
RESULT_KEYS = ("methods", "original_reference")
INFO_SUFFIX = ".info.json"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def split_record(record: dict) -> tuple[dict, dict]:
    """(numbers, info): numeric leaves under RESULT_KEYS, and every other leaf."""
    def walk(d: dict, in_results: bool) -> tuple[dict, dict]:
        nums, info = {}, {}
        for k, v in d.items():
            if isinstance(v, dict):
                n, i = walk(v, in_results)
                if n:
                    nums[k] = n
                if i or not n:
                    info[k] = i
            elif in_results and _is_number(v):
                nums[k] = v
            else:
                info[k] = v
        return nums, info

    nums, info = {}, {}
    for k, v in record.items():
        if k in RESULT_KEYS and isinstance(v, dict):
            n, i = walk(v, True)
            nums[k] = n
            if i:
                info[k] = i
        else:
            info[k] = v
    return nums, info


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_metrics(out_dir: str | Path, name: str, record: dict) -> tuple[Path, Path]:
    """Write `record` as OUT/<name>.json (numbers) + OUT/<name>.info.json (the rest), atomically."""
    from ..fsio import write_json

    nums, info = split_record(record)
    paths = Path(out_dir) / f"{name}.json", Path(out_dir) / f"{name}{INFO_SUFFIX}"
    write_json(paths[0], nums)
    write_json(paths[1], info)
    return paths


def read_metrics(metrics_dir: str | Path, name: str) -> dict | None:
    """The full record of metrics `name` (numbers + info merged); None when the stage wrote neither."""
    from ..errors import InputError

    parts = []
    for path in (Path(metrics_dir) / f"{name}.json", Path(metrics_dir) / f"{name}{INFO_SUFFIX}"):
        if not path.is_file():
            continue
        try:
            parts.append(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise InputError(path, f"not valid JSON ({e})") from e
    if not parts:
        return None
    return _merge(parts[0], parts[1]) if len(parts) == 2 else parts[0]


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
