"""Same artifacts anywhere: `dvc repro` in a fresh clone of HEAD reproduces the committed results.

`make repro-check` (CI runs it after `make test`; ~6 min on 2 idle cores, skipped by a plain pytest run):
  - every stage with no floating-point reduction (reports/metrics/tolerances.yaml `exact_stages`) gives
    outputs identical to the committed dvc.lock;
  - `dvc metrics diff` against the committed metrics stays within the per-metric tolerances, and the
    tracked training curves within theirs; no other tracked file changes;
  - a second `dvc repro` runs nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.repro_check


def _run(args, cwd, timeout=3600):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(Path(cwd) / "src"), "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _lock(text: str) -> dict:
    from ruamel.yaml import YAML  # dvc.lock is YAML 1.2, as DVC writes it

    return YAML(typ="safe").load(text)["stages"]


def _outs(entry: dict) -> dict:
    return {o["path"]: o.get("md5") for o in entry.get("outs", [])}


def _tolerance(rules: dict, key: str) -> dict:
    return rules.get(key.split(".")[-1], {"abs": 0, "derivation": "no rule: must be identical"})


def _within(old: float, new: float, rule: dict) -> bool:
    bound = rule.get("abs", 0) + rule.get("rel", 0) * abs(old)
    return abs(new - old) <= bound + 1e-12


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    dst = tmp_path_factory.mktemp("fresh") / "ipfacediff"
    _run(["git", "clone", "-q", str(ROOT), str(dst)], ROOT)
    _run(["dvc", "repro"], dst)
    return dst


def test_stages_without_float_reductions_give_identical_outputs(clone):
    tol = yaml.safe_load((clone / "reports" / "metrics" / "tolerances.yaml").read_text())
    committed = _lock(subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=clone, capture_output=True, text=True,
                                     check=True).stdout)
    fresh = _lock((clone / "dvc.lock").read_text())
    for stage in tol["exact_stages"]:
        assert _outs(fresh[stage]) == _outs(committed[stage]), f"{stage}: outputs differ from the committed dvc.lock"


def test_metrics_within_tolerance_and_nothing_else_moved(clone):
    tol = yaml.safe_load((clone / "reports" / "metrics" / "tolerances.yaml").read_text())
    diff = json.loads(_run(["dvc", "metrics", "diff", "--json"], clone) or "{}")
    problems = []
    for path, keys in diff.items():
        for key, d in keys.items():
            old, new = d.get("old"), d.get("new")
            if old is None or new is None:
                problems.append(f"{path}:{key} appeared or vanished ({old} -> {new})")
            elif not _within(old, new, _tolerance(tol["metrics"], key)):
                problems.append(f"{path}:{key} {old} -> {new} beyond {_tolerance(tol['metrics'], key)}")
    changed = _run(["git", "status", "--porcelain"], clone).split("\n")
    changed = [line[3:] for line in changed if line.strip()]
    for rel in changed:
        if rel == "dvc.lock" or (rel.startswith("reports/metrics/") and rel.endswith(".json") and not rel.endswith(".info.json")):
            continue  # the lock's exact stages and the metrics are checked above
        if rel.startswith("reports/train/") and rel.endswith(".tsv"):
            problems += _curve_problems(clone, rel, tol["curves"])
            continue
        problems.append(f"{rel}: changed (only metrics and training curves may move, within tolerance)")
    assert not problems, "\n".join(problems)


def _curve_problems(clone: Path, rel: str, rules: dict) -> list[str]:
    old = list(csv.DictReader(io.StringIO(subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=clone, capture_output=True,
                                                         text=True, check=True).stdout), delimiter="\t"))
    new = list(csv.DictReader(io.StringIO((clone / rel).read_text()), delimiter="\t"))
    if [r["step"] for r in old] != [r["step"] for r in new]:
        return [f"{rel}: steps differ"]
    out = []
    for a, b in zip(old, new):
        for col in a:
            rule = rules.get(col, rules["default"])
            if col != "step" and not _within(float(a[col]), float(b[col]), rule):
                out.append(f"{rel} step {a['step']} {col}: {a[col]} -> {b[col]} beyond {rule}")
    return out


def test_second_repro_runs_nothing(clone):
    out = _run(["dvc", "repro"], clone)
    assert "Running stage" not in out, out
