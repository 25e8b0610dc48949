"""workflow/Snakefile RUNS (not a dry run): each rule its own command, persistent outputs kept across a
rerun, threads/resources/log from workflow/resources.yaml.

A miniature dvc.yaml (three cheap stages) goes through the real Snakefile and ipfacediff.dag in a temp
folder laid out like the repository; the real DAG's cheap prefix runs in tests/test_dvc_repro.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ipfacediff.dag import load_resources, load_stages, rule_specs

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# each stage writes its own name: if every rule ran the last stage's command (the late-binding bug),
# `first` and `second` would hold "third"
MINI_DVC = """
stages:
  first:
    cmd: python -c "open('out/first.txt', 'w').write('first')"
    outs: [out/first.txt]
  second:
    cmd: python -c "open('out/second.txt', 'w').write(open('out/first.txt').read() + '>second')"
    deps: [out/first.txt]
    params: [n]
    outs: [out/second.txt]
  third:
    cmd: python -c "import os; os.makedirs('out/ckpt', exist_ok=True); open('out/ckpt/runs.txt', 'a').write('run\\\\n');
      open('out/third.txt', 'w').write(str(len(open('out/ckpt/runs.txt').readlines())))"
    deps: [out/second.txt]
    outs:
      - out/third.txt
      - out/ckpt: {persist: true, cache: false}
"""
MINI_RESOURCES = """
default: {threads: 1, mem_mb: 100, gpu: 0, runtime: 5}
stages:
  third: {threads: 3, mem_mb: 1234, gpu: 1}
"""


def _snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "snakemake"), "-s", "workflow/Snakefile", "--cores", "4", *args],
                          cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture
def mini(tmp_path):
    (tmp_path / "workflow").mkdir()
    shutil.copy(ROOT / "workflow" / "Snakefile", tmp_path / "workflow" / "Snakefile")
    (tmp_path / "workflow" / "resources.yaml").write_text(MINI_RESOURCES)
    pkg = tmp_path / "src" / "ipfacediff"
    pkg.mkdir(parents=True)
    for f in ("__init__.py", "dag.py"):
        shutil.copy(ROOT / "src" / "ipfacediff" / f, pkg / f)
    (tmp_path / "dvc.yaml").write_text(MINI_DVC)
    (tmp_path / "params.yaml").write_text("n: 1\n")
    (tmp_path / "out").mkdir()
    return tmp_path


@pytest.mark.slow
def test_rules_run_their_own_commands_keep_persistent_outputs_and_use_the_table(mini):
    _snakemake(mini)
    assert (mini / "out" / "first.txt").read_text() == "first"
    assert (mini / "out" / "second.txt").read_text() == "first>second"
    assert (mini / "out" / "third.txt").read_text() == "1"
    for rule in ("first", "second", "third"):
        assert (mini / "logs" / f"{rule}.log").is_file(), rule
    # a changed parameter reruns the stage reading it (and what follows), with the table's threads/resources
    (mini / "params.yaml").write_text("n: 2\n")
    plan = _snakemake(mini, "-n").stdout
    assert "rule second:" in plan and "rule first:" not in plan
    third = plan[plan.index("rule third:"):]
    third = third[: third.index("\n\n")] if "\n\n" in third else third
    assert "threads: 3" in third and "mem_mb=1234" in third and "gpu=1" in third
    _snakemake(mini)
    # DVC `persist: true` semantics: the checkpoint folder kept the first run's state
    assert (mini / "out" / "ckpt" / "runs.txt").read_text() == "run\nrun\n"
    assert (mini / "out" / "third.txt").read_text() == "2"


def test_real_dag_rules_declare_no_persistent_output():
    stages = load_stages(ROOT / "dvc.yaml", ROOT / "params.yaml")
    specs = {s.name: s for s in rule_specs(stages, load_resources(ROOT / "workflow" / "resources.yaml"))}
    persistent = {p for st in stages for p in st.persist}
    assert persistent >= {"data/inversions", "models/checkpoints/identity", "models/checkpoints/directional"}
    for spec in specs.values():
        assert not persistent & set(spec.outputs), spec.name
    # consumers of a persistent output wait for its producer's flag instead
    assert specs["invert"].flag in specs["edit_ours"].inputs and "data/inversions" not in specs["edit_ours"].inputs
    table = yaml.safe_load((ROOT / "workflow" / "resources.yaml").read_text())["stages"]
    assert {st.base_name for st in stages} == set(table), "every stage needs a row in workflow/resources.yaml"
    assert specs["finetune_id"].resources["gpu"] == 1 and specs["edit_ours"].threads == table["edit"]["threads"]
