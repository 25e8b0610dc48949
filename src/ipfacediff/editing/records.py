"""What an edit was made with, its skip-if-done fingerprint, and the atomic write of its outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..layout import record_path

RANDOM_WEIGHTS_NOTE = "random-weight diffusion models: this exercises the editing pipeline; the edit itself is not meaningful"
# record keys an edit's pixels depend on; "config" holds only EditSettings.output_settings()
FINGERPRINT_KEYS = ("method", "prompt", "config", "seed", "models", "inversion", "video")


def models_record(components, branches, models_dir=None) -> dict:
    """Base model (source, weights kind, hash) and each branch's source."""
    from ..diffusion.branches import BRANCHES, read_branch_meta

    info = components.info
    record = {
        "dir": None if models_dir is None else str(models_dir),
        "source": info.get("source"), "weights": info.get("weights"), "sha256": components.model_hash,
        "branches": {name: branches.sources.get(name, "base") for name in BRANCHES},
    }
    for name, src in record["branches"].items():
        _, _, path = src.partition(":")
        meta = read_branch_meta(path) if path else {}
        if meta:
            keys = ("mode", "steps", "base_hash", "fingerprint")
            record.setdefault("branch_meta", {})[name] = {k: meta.get(k) for k in keys if k in meta}
    if info.get("weights") == "random":
        record["note"] = RANDOM_WEIGHTS_NOTE
    return record


def fingerprint(inputs: dict) -> str:
    """sha256 of the output-affecting inputs (FINGERPRINT_KEYS of the record)."""
    text = json.dumps({k: inputs[k] for k in FINGERPRINT_KEYS}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def up_to_date(target: Path, expected: str) -> bool:
    """Whether `target` and its record exist and the record's fingerprint is `expected`."""
    side = record_path(target)
    if not (target.is_file() and side.is_file()):
        return False
    try:
        return json.loads(side.read_text()).get("fingerprint") == expected
    except json.JSONDecodeError:
        return False


def write_edit(video_path, frames, fps, record: dict, audio_from=None):
    """Write the edited video and its JSON record (same name, .json) atomically: both or neither."""
    from ..fsio import atomic_path
    from ..video import write_video

    video_path = Path(video_path)
    with atomic_path(video_path) as tmp_video, atomic_path(record_path(video_path)) as tmp_json:
        result = write_video(tmp_video, frames, fps, audio_from=audio_from)
        out = {"path": str(video_path), "frames": result.n_frames, "width": result.width, "height": result.height,
               "fps": str(result.fps), "audio": result.audio}
        tmp_json.write_text(json.dumps({**record, "output": out}, indent=2, sort_keys=True, default=str) + "\n")
    return result
