"""Shared fixtures: real media from ../shared/media (skipped with a reason where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tests never write W&B runs, whatever the caller's environment says (`make` exports offline):
# set before any test, fixture or subprocess starts; a test of tracking itself overrides it locally.
os.environ["WANDB_MODE"] = "disabled"
SHARED_MEDIA = Path(os.environ.get("IPFACEDIFF_SHARED_MEDIA", ROOT.parent / "shared" / "media"))


@pytest.fixture(scope="session")
def media_dir() -> Path:
    if not (SHARED_MEDIA / "videos").is_dir():
        pytest.skip(f"real test media not found at {SHARED_MEDIA} (set IPFACEDIFF_SHARED_MEDIA)")
    return SHARED_MEDIA


@pytest.fixture(scope="session")
def grid_clip(media_dir, tmp_path_factory):
    """Factory: `grid_clip(n, name="grid_bbaf2n", out=None)` -> the first `n` frames of a GRID talking head
    (360x288, 25 fps) with the matching stretch of its audio, as an mp4. Without `out` the clip is written
    once per session into a shared folder (read-only input: never write beside it)."""
    from ipfacediff.video import read_video, write_video

    made: dict[tuple[str, int], Path] = {}

    def make(n: int, name: str = "grid_bbaf2n", out: Path | None = None) -> Path:
        if out is None and (name, n) in made:
            return made[name, n]
        src = media_dir / "videos" / f"{name}.mpg"
        v = read_video(src, max_frames=n)
        path = out or tmp_path_factory.mktemp(f"{name}_{n}") / "talk.mp4"
        write_video(path, v.frames, v.fps, audio_from=src, audio_range_s=(0.0, n / float(v.fps)))
        if out is None:
            made[name, n] = path
        return path

    return make


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")


def _wandb_entries() -> set[str]:
    return {p.name for p in (ROOT / "wandb").glob("*")} if (ROOT / "wandb").is_dir() else set()


def pytest_sessionstart(session):
    session.config._wandb_before = _wandb_entries()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if the test suite wrote anything into ./wandb/ (it must not write runs)."""
    new = _wandb_entries() - getattr(session.config, "_wandb_before", set())
    if new:
        print(f"\nERROR: the test suite wrote W&B runs into {ROOT / 'wandb'}: {', '.join(sorted(new))}")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Random-weight diffusion models in the real on-disk layout (built once per session)."""
    from ipfacediff.diffusion.models import build_tiny

    out = tmp_path_factory.mktemp("tiny_models") / "base"
    build_tiny(out, seed=0)
    return out


def pytest_addoption(parser):
    parser.addoption("--repro-check", action="store_true",
                     help="run the whole-pipeline checks: fresh-clone repro, paper-profile rehearsal (`make repro-check`)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--repro-check"):
        return
    skip = pytest.mark.skip(reason="whole-pipeline run (minutes: fresh-clone dvc repro, paper-profile rehearsal): run `make repro-check`")
    for item in items:
        if "repro_check" in item.keywords:
            item.add_marker(skip)
