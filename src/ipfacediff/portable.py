"""Paths written into tracked outputs (metrics JSON, dvc.lock-hashed records) without machine detail.

An absolute path names the machine that made a file (`/home/alice/ipfacediff/.venv/...`), so the
same run on another checkout changes a tracked file. `portable_path` writes a path the same way on
every machine: relative to the repository when inside it, `site-packages:<package>/...` for files
shipped in an installed package, `hf-cache:<...>` inside the Hugging Face cache, `~/...` under the home
folder; only a path outside all of these (a user's own data folder) stays absolute.
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _package_roots() -> list[Path]:
    roots = [p for p in sys.path if p and Path(p).name in ("site-packages", "dist-packages")]
    roots += list(site.getsitepackages()) + [site.getusersitepackages()]
    return sorted({Path(r).resolve() for r in roots if Path(r).is_dir()}, key=lambda p: -len(p.parts))


def _hf_cache() -> Path | None:
    from .diffusion.models import hf_cache_dir  # the one definition of where the hub cache is

    try:
        return hf_cache_dir().resolve()
    except OSError:
        return None


def portable_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """`path` written without machine-specific parts (see module docstring); POSIX separators."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute():
        return p.as_posix()
    p = p.resolve()
    # installed packages first: a virtualenv inside the checkout (`make setup`'s .venv) is still
    # "site-packages", not a repository path that depends on where the venv was made
    prefixes = [("site-packages:", r) for r in _package_roots()]
    prefixes += [("", Path(root).resolve() if root else REPO_ROOT)]
    hf = _hf_cache()
    if hf is not None:
        prefixes.append(("hf-cache:", hf))
    prefixes.append(("~/", Path.home().resolve()))
    for label, base in prefixes:
        if p.is_relative_to(base):
            return label + p.relative_to(base).as_posix()
    return p.as_posix()


def _portable_token(token: str) -> str:
    label, sep, rest = token.partition(":")  # "lora:/abs/path" as branch sources are recorded
    if sep and rest.startswith("/") and "/" not in label:
        return f"{label}:{portable_path(rest)}"
    return portable_path(token) if token.startswith("/") else token


def portable_record(obj):
    """`obj` (JSON-like) with every absolute path inside its strings, alone or within a command line,
    written by `portable_path`: results files committed from one machine name no machine."""
    if isinstance(obj, dict):
        return {k: portable_record(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable_record(v) for v in obj]
    if isinstance(obj, str) and "/" in obj:
        return " ".join(_portable_token(t) for t in obj.split(" "))
    return obj
