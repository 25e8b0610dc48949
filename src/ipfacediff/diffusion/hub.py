"""Where weights come from: model folders, `ipfacediff.json` pointers and the local Hugging Face cache
(never the network)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from ..fsio import sha256_file


INFO_FILE = "ipfacediff.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")

SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


SD21_BASE = "stabilityai/stable-diffusion-2-1-base"


OBTAIN_HINT = (
    "obtain it on a networked machine with `hf download {spec}` (then copy the Hugging Face cache here, "
    "or set HF_HOME to it), or set {param} to a local folder"
)
FP16_VARIANT_FILE = "unet/diffusion_pytorch_model.fp16.safetensors"  # what SD repos ship for variant="fp16"


def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub would use, read from the environment NOW (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home) / "hub"


def resolve_pretrained(spec: str | Path, required: Sequence[str] = ("model_index.json",) + tuple(f"{c}" for c in SD_COMPONENTS),
                       param: str = "models.pretrained") -> Path:
    """A local folder, or `org/name` looked up in the Hugging Face cache without touching the network.

    `required` are paths that must exist in the folder; `param` is the parameter the error names.
    Raises InputError saying how to obtain it.
    """
    path = Path(os.path.expanduser(str(spec)))
    if path.is_dir():
        _check_required(path, required)
        return path.resolve()
    if str(spec).count("/") != 1 or path.is_absolute() or str(spec).startswith("."):
        raise InputError(spec, f"{param}: model folder not found; " + OBTAIN_HINT.format(spec="<org>/<name>", param=param))
    from huggingface_hub import snapshot_download

    try:
        found = Path(snapshot_download(str(spec), cache_dir=str(hf_cache_dir()), local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError and friends: nothing cached
        raise InputError(spec, f"{param}: not in the local Hugging Face cache ({hf_cache_dir()}); "
                         + OBTAIN_HINT.format(spec=spec, param=param)) from e
    _check_required(found, required)
    return found


def _check_required(folder: Path, required: Sequence[str]) -> None:
    missing = [r for r in required if not (folder / r).exists()]
    if missing:
        raise InputError(folder, f"incomplete model folder (missing {', '.join(missing)})")


def follow_pointer(models_dir: str | Path, required: Sequence[str]) -> tuple[Path, dict]:
    """The folder holding the weights (following a pointer `ipfacediff.json`) and its info."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise InputError(models_dir, "model folder not found (run `dvc repro models`, or give a diffusers folder)")
    info_file = models_dir / INFO_FILE
    info: dict = {}
    if info_file.is_file():
        try:
            info = json.loads(info_file.read_text())
        except json.JSONDecodeError as e:
            raise InputError(info_file, f"corrupt model info ({e.msg}); rerun `dvc repro models`") from e
    folder = Path(info["path"]) if "path" in info else models_dir
    if not folder.is_dir():
        raise InputError(info_file, f"points at {folder}, which does not exist")
    _check_required(folder, required)
    if not info:
        info = {"source": "local", "weights": "unknown", "path": str(folder), "sha256": weight_hashes(folder)}
    return folder, info


def first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def weight_hashes(folder: str | Path) -> dict[str, str]:
    """sha256 of every weight file under `folder` (relative path -> hash) plus a combined hash."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES and ".cache" not in p.parts)
    hashes = {str(p.relative_to(folder)): sha256_file(p) for p in files}
    combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in hashes.items()).encode()).hexdigest()
    return {**hashes, "combined": combined}
