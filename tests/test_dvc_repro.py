"""`dvc repro` caches, and `dvc exp run -S` re-runs only the stages a parameter reaches.

Runs the front of the DAG (sample_media -> prep_* -> data_card, ~30 s) in a throwaway git repo made
from this checkout's tracked files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _run(args, cwd, **kw):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, **kw)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    (dst / "dvc.lock").unlink(missing_ok=True)
    _run(["git", "init", "-q"], dst)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dst)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "snapshot"], dst)
    _run(["dvc", "repro", "data_card"], dst)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dst)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "repro"], dst)
    return dst


def test_second_repro_is_a_cache_hit(repo):
    out = _run(["dvc", "repro", "data_card"], repo)
    assert "Running stage" not in out, out


def test_exp_run_with_a_param_reruns_only_affected_stages(repo):
    out = _run(["dvc", "exp", "run", "-S", "data.face_every=3", "data_card"], repo)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"prep_faces", "data_card"}, out
