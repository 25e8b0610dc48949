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
                     help="run the fresh-clone `dvc repro` reproduction check (`make repro-check`)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--repro-check"):
        return
    skip = pytest.mark.skip(reason="full dvc repro in a fresh clone (minutes): run `make repro-check`")
    for item in items:
        if "repro_check" in item.keywords:
            item.add_marker(skip)
