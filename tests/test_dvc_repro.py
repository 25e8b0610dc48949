"""`dvc repro` caches, and `dvc exp run -S` re-runs only the stages a parameter reaches.

Runs the front of the DAG (sample_media -> prep_* -> data_card, ~30 s) in a throwaway git repo made
from this checkout's tracked files.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ipfacediff.dag import load_stages

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


def test_snakemake_makes_the_same_artifacts_as_dvc(repo):
    """The real workflow (not -n) over the cheap prefix: DVC's lock must find Snakemake's outputs identical."""
    out = _run([str(BIN / "snakemake"), "-s", "workflow/Snakefile", "--cores", "2", "--forceall", "data_card"], repo)
    for rule in ("sample_media", "prep_videos", "prep_faces", "data_card"):
        assert (repo / "logs" / f"{rule}.log").is_file(), out
    status = _run(["dvc", "status", "data_card"], repo)
    assert "up to date" in status, status


def test_bytecode_editor_files_and_logs_never_make_a_stage_stale(repo):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(repo / "src")
    subprocess.run([sys.executable, "-c", "import ipfacediff.face.prep, ipfacediff.media, ipfacediff.report.data_card"],
                   cwd=repo, env=env, check=True)
    assert list((repo / "src" / "ipfacediff" / "face").glob("__pycache__/*.pyc")), "bytecode was not written"
    for folder in (repo / "src" / "ipfacediff" / "face", repo / "stages", repo / "data" / "media"):
        (folder / "notes.py~").write_text("editor backup")
        (folder / ".prep.py.swp").write_text("vim swap")
        (folder / "debug.log").write_text("a log")
    status = _run(["dvc", "status", "data_card"], repo)
    assert "up to date" in status, status
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:  # every folder dependency of every stage ignores the same files
        folders = {d for st in load_stages(repo / "dvc.yaml", repo / "params.yaml") for d in st.deps
                   if (repo / d).is_dir()}
        for folder in folders:
            for name in ("__pycache__", ".ipynb_checkpoints"):
                assert dvc.dvcignore.is_ignored_dir(str(repo / folder / name)), f"{folder}/{name}"
            for name in ("m.pyc", "m.py~", ".m.py.swp", "#m.py#", "run.log"):
                assert dvc.dvcignore.is_ignored_file(str(repo / folder / name)), f"{folder}/{name}"


def test_exp_run_with_a_param_reruns_only_affected_stages(repo):
    from ipfacediff.dag import plan_experiment

    prefix = {"sample_media", "prep_videos", "prep_faces", "data_card"}
    predicted = set(plan_experiment(repo, ["data.face_every=3"])) & prefix  # the lock here covers the prefix only
    out = _run(["dvc", "exp", "run", "-n", "every3", "-S", "data.face_every=3", "data_card"], repo)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"prep_faces", "data_card"} == predicted, out
    # `dvc exp show` is the comparison table: the experiment beside its baseline, with the changed parameter
    table = _run(["dvc", "exp", "show", "--csv", "--only-changed"], repo)
    rows = list(csv.DictReader(io.StringIO(table)))
    by_name = {r["Experiment"]: r for r in rows}
    assert by_name["every3"]["data.face_every"] == "3" and any(r["data.face_every"] != "3" for r in rows), table


def test_a_sweep_is_queued_one_experiment_per_value(repo):
    _run(["dvc", "exp", "run", "--queue", "-S", "data.face_every=2,4", "data_card"], repo)
    status = _run(["dvc", "queue", "status"], repo)
    assert status.count("Queued") == 2, status
    _run(["dvc", "queue", "remove", "--queued"], repo)


def _readme_ablation_grid() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if "dvc queue start" in b)


def test_readme_ablation_grid_queues_each_ablation_with_what_a_queued_run_needs():
    """The README's queued grid: every paper ablation in it, each line a real change of parameters (some
    stage re-runs against dvc.lock) and each given the uncached persistent outputs (`-C`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ipfacediff.dag import plan_experiment, queue_copy_paths

    block = _readme_ablation_grid()
    assert "KEEP=$(python -m ipfacediff.dag copy-paths)" in block
    lines = [shlex.split(line.split("#")[0]) for line in block.splitlines()]
    runs = [argv for argv in lines if argv[:4] == ["dvc", "exp", "run", "--queue"]]
    overrides = [[argv[i + 1] for i, a in enumerate(argv) if a == "-S"] for argv in runs]
    for ablation in ("finetune_id.enabled=false", "finetune_dir.enabled=false", "finetune_id.mode=full"):
        assert any(ablation in o for o in overrides), f"README grid lacks {ablation}"
    assert all("$KEEP" in argv for argv in runs)
    parser = OverridesParser.create()
    for argv, over in zip(runs, overrides):
        # one experiment per combination of sweep values, as DVC queues a Hydra sweep
        choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
                   else [o.input_line] for o in parser.parse_overrides(over)]
        plans = [plan_experiment(ROOT, list(combo)) for combo in itertools.product(*choices)]
        assert any(plans), f"{' '.join(argv)}: changes nothing dvc.lock records"
    stages = load_stages(ROOT / "dvc.yaml", ROOT / "params.yaml")
    copied = queue_copy_paths(stages)
    assert {"models/checkpoints/identity", "models/checkpoints/directional"} <= set(copied)
    tracked = subprocess.run(["git", "ls-files", *copied], cwd=ROOT, capture_output=True, text=True).stdout
    assert not tracked, f"git already carries {tracked} into a queued run's workspace"
