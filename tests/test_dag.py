"""dvc.yaml is the DAG; workflow/Snakefile must run the same stages with the same inputs and outputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ipfacediff.dag import load_stages

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _dvc_stages():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {
            s.addressing.split(":")[-1]: s
            for s in repo.index.stages
            if s.cmd  # pipeline stages, not .dvc-tracked data
        }


def test_our_reading_of_dvc_yaml_matches_dvcs():
    ours = {s.name: s for s in load_stages(ROOT / "dvc.yaml", ROOT / "params.yaml")}
    theirs = _dvc_stages()
    assert set(ours) == set(theirs)
    for name, stage in theirs.items():
        assert ours[name].cmd == (" && ".join(stage.cmd) if isinstance(stage.cmd, list) else stage.cmd), name
        assert sorted(ours[name].deps) == sorted(
            d.def_path for d in stage.deps if not d.def_path.endswith("params.yaml") and type(d).__name__ != "ParamsDependency"
        ), name
        assert sorted(ours[name].outs) == sorted(o.def_path for o in stage.outs), name


def test_snakemake_rules_are_the_dvc_stages():
    out = subprocess.run(
        [str(BIN / "snakemake"), "-s", "workflow/Snakefile", "--list-rules"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    expected = {re.sub(r"\W", "_", s.name) for s in load_stages(ROOT / "dvc.yaml", ROOT / "params.yaml")}
    assert set(out) - {"all"} == expected


@pytest.mark.slow
def test_snakemake_dry_run_plans_every_stage(tmp_path):
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-s", "workflow/Snakefile", "-n", "--cores", "2", "--forceall", "--quiet", "rules"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    planned = set(re.findall(r"^(\w+)\s+\d+$", proc.stdout, flags=re.M))
    expected = {re.sub(r"\W", "_", s.name) for s in load_stages(ROOT / "dvc.yaml", ROOT / "params.yaml")}
    assert expected <= planned


def test_parent_folder_deps_expand_to_the_outputs_inside_them():
    from ipfacediff.dag import Stage, expand_parent_deps

    stages = [
        Stage("edit@a", "x", ["data/in"], ["data/edits/a"], []),
        Stage("edit@b", "x", ["data/in"], ["data/edits/b"], []),
        Stage("metrics", "y", ["data/edits", "data/in", "src/m.py"], ["out.json"], []),
    ]
    assert expand_parent_deps(stages)["metrics"] == ["data/edits/a", "data/edits/b", "data/in", "src/m.py"]
    assert expand_parent_deps(stages)["edit@a"] == ["data/in"]


EDITS = {f"edit@{m}" for m in ("ours", "no_id_guidance", "no_directional", "tokenflow", "per_frame")}
AFTER_EDIT = {"timing", "metrics_identity", "metrics_temporal", "metrics_clip", "report"}


@pytest.mark.parametrize("override, expected", [
    # the README's ablations, as `dvc exp run -S <override>` runs them
    ("edit.guidance_scale=5", EDITS | AFTER_EDIT),
    ("finetune_id.enabled=false", {"finetune_id", "invert"} | EDITS | AFTER_EDIT),
    ("finetune_id.mode=full", {"finetune_id", "invert"} | EDITS | AFTER_EDIT),
    ("edit.methods=[ours,tokenflow]", {"edit@ours", "edit@tokenflow"} | AFTER_EDIT),
])
def test_experiment_plan_for_each_readme_ablation(override, expected):
    from ipfacediff.dag import plan_experiment

    baseline = set(plan_experiment(ROOT, []))
    assert baseline == set(), f"dvc.lock does not match params.yaml (run `dvc repro`): {sorted(baseline)}"
    assert set(plan_experiment(ROOT, [override])) == expected


def test_plan_cli_rejects_an_unknown_parameter():
    proc = subprocess.run([sys.executable, "-m", "ipfacediff.dag", "plan", "-S", "edit.no_such_key=1"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "edit.no_such_key" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
