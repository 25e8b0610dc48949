"""`ipfacediff batch jobs.yaml`: every video x prompt x option set, resumable.

jobs.yaml (paths relative to the file):

    output_dir: edits            # default: <jobs file stem>_out
    videos: [clips/a.mp4, clips/b.mp4]
    prompts: ["a photo of a person with blond hair", "a photo of a smiling person"]
    defaults: {steps: 10, seed: 0}          # optional, under every option set
    options: [{}, {method: per_frame}]      # optional option sets (app/engine.py EditOptions fields)

Each output is OUTPUT_DIR/<video stem>/<prompt slug>-<8 hex of its fingerprint>.mp4 with its JSON
record beside it (.mp4.json, layout.record_path; written atomically, both or neither). The fingerprint hashes the input video's bytes,
the prompt and the resolved options; an output counts as done only when its video and record exist,
the record carries the same fingerprint and the video holds the frames the record says: a killed
run's temporary files are never taken as done and are removed before the item is redone (its edit
resumes from the editor's work folder, cli/edit.py). `branches: base` edits with the base weights.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import InputError
from ..layout import record_path
from .engine import EditOptions, edit_video

FINGERPRINT_VERSION = 1


@dataclass
class BatchItem:
    video: Path
    prompt: str
    options: EditOptions
    fingerprint: str
    output: Path

    def label(self) -> dict:
        return {"video": self.video.name, "prompt": self.prompt, "options": self.options.public()}


def slug(text: str, n: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s[:n].rstrip("_") or "prompt"


def _list(spec: dict, key: str, path: Path, kind=str) -> list:
    v = spec.get(key)
    if not isinstance(v, list) or not v or not all(isinstance(x, kind) for x in v):
        raise InputError(path, f"'{key}' must be a non-empty list of {kind.__name__}s")
    return v


def load_jobs(path: str | Path) -> tuple[list[BatchItem], Path]:
    """Every (video, prompt, option set) of a jobs file, validated, with its fingerprint and output."""
    from ..cli.edit import BASE_BRANCHES
    from ..fsio import sha256_file

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise InputError(path, "jobs file not found") from e
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(spec, dict):
        raise InputError(path, "jobs file must be a mapping with videos, prompts and optional options")
    unknown = sorted(set(spec) - {"output_dir", "videos", "prompts", "defaults", "options"})
    if unknown:
        raise InputError(path, f"unknown key(s) {', '.join(unknown)}")
    base = path.parent
    videos = [(base / v).resolve() for v in _list(spec, "videos", path)]
    prompts = [p.strip() for p in _list(spec, "prompts", path)]
    if any(not p for p in prompts):
        raise InputError(path, "empty prompt in 'prompts'")
    defaults = spec.get("defaults") or {}
    option_sets = spec.get("options") or [{}]
    if not isinstance(defaults, dict) or not isinstance(option_sets, list) or not all(isinstance(o, dict) for o in option_sets):
        raise InputError(path, "'defaults' must be a mapping and 'options' a list of mappings")
    resolved = [EditOptions.from_dict({**defaults, **o}, path) for o in option_sets]
    for o in resolved:
        for key in ("models", "branches", "params"):  # paths in the jobs file are relative to it
            if getattr(o, key) and not (key == "branches" and o.branches == BASE_BRANCHES):
                setattr(o, key, str((base / getattr(o, key)).resolve()))
    out_dir = (base / spec.get("output_dir", f"{path.stem}_out")).resolve()
    items = []
    for v in videos:
        if not v.is_file():
            raise InputError(v, f"video listed in {path} not found")
        digest = sha256_file(v)
        for p in prompts:
            for o in resolved:
                fp = hashlib.sha256(json.dumps({"v": FINGERPRINT_VERSION, "video": digest, "prompt": p, "options": o.public()},
                                               sort_keys=True).encode()).hexdigest()
                items.append(BatchItem(v, p, o, fp, out_dir / v.stem / f"{slug(p)}-{fp[:8]}.mp4"))
    outs = [i.output for i in items]
    if len(set(outs)) != len(outs):
        raise InputError(path, "two jobs resolve to the same output (duplicate video, prompt and options?)")
    return items, out_dir


def is_done(item: BatchItem) -> bool:
    """Video and record both present, the record's fingerprint matches, the video has its frames."""
    from ..video import probe

    rec_path = record_path(item.output)
    if not (item.output.is_file() and rec_path.is_file()):
        return False
    try:
        rec = json.loads(rec_path.read_text())
        return rec.get("batch", {}).get("fingerprint") == item.fingerprint and probe(item.output).n_frames == rec["output"]["frames"]
    except (ValueError, KeyError, InputError, OSError):
        return False
    except Exception:  # noqa: BLE001 - an unreadable video (PyAV error) is not done
        return False


def _remove_leftovers(item: BatchItem) -> None:
    """A killed run's temporary files (fsio.atomic_path names: .<stem>.*.tmp<suffix>)."""
    for p in item.output.parent.glob(f".{item.output.stem}.*.tmp*"):
        p.unlink(missing_ok=True)


def run_batch(path: str | Path, progress: bool = True) -> list[dict]:
    """Run every job not already done; one row per job: status done | skipped | failed."""
    from tqdm import tqdm

    items, _ = load_jobs(path)
    rows = []
    for n, item in enumerate(tqdm(items, desc="batch", unit="edit", disable=not progress), 1):
        row = {"n": n, **item.label(), "output": str(item.output), "fingerprint": item.fingerprint[:12]}
        if is_done(item):
            rec = json.loads(record_path(item.output).read_text())
            rows.append(row | {"status": "skipped (done)", "frames": rec["output"]["frames"], "seconds": 0.0})
            continue
        _remove_leftovers(item)
        item.output.parent.mkdir(parents=True, exist_ok=True)
        item.options.extra = {"batch": {"fingerprint": item.fingerprint, "jobs_file": str(Path(path).resolve()),
                                        "index": n, "of": len(items)}}
        t0 = time.perf_counter()
        try:
            rec = edit_video(item.video, item.output, item.prompt, item.options)
        except InputError as e:
            rows.append(row | {"status": f"failed: {e}", "frames": 0, "seconds": round(time.perf_counter() - t0, 1)})
            continue
        rows.append(row | {"status": "done", "frames": rec["output"]["frames"], "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def summary_table(rows: list[dict]) -> str:
    """Markdown table: one line per job."""
    head = ["#", "video", "prompt", "options", "status", "frames", "s", "output"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-"
        cells = [r["n"], r["video"], r["prompt"], opts, r["status"], r["frames"], r["seconds"], Path(r["output"]).name]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)
