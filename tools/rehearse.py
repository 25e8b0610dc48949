"""Rehearse the paper profile end to end on stand-ins: `python tools/rehearse.py [WORK]`.

1. builds the stand-ins (`python -m ipfacediff.standins WORK/standins`) unless WORK/standins exists;
2. copies this checkout's tracked files into WORK/repo (a fresh git repo: the real workspace is never
   touched) and links data/external -> WORK/standins/external;
3. runs `dvc exp run -S profile=paper` plus the size/count overrides of conf/rehearsal.yaml (the only
   ones), with HF_HOME / TORCH_HOME / DEEPFACE_HOME pointing at the stand-ins, through every stage to
   reports/tables. Exit status: dvc's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ipfacediff.standins import build_standins, environment  # noqa: E402


def overrides() -> list[str]:
    """`-S key=value` arguments from conf/rehearsal.yaml (lists in Hydra's [a,b] syntax)."""
    items = yaml.safe_load((ROOT / "conf" / "rehearsal.yaml").read_text())["overrides"]
    fmt = lambda v: "[" + ",".join(map(str, v)) + "]" if isinstance(v, list) else str(v)  # noqa: E731
    return [f"{k}={fmt(v)}" for k, v in items.items()]


def copy_checkout(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    (dst / "dvc.lock").unlink(missing_ok=True)  # the sample profile's lock would only be noise here
    git = ["git", "-c", "user.email=rehearsal@localhost", "-c", "user.name=rehearsal"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "rehearsal snapshot"]):
        subprocess.run(git + args, cwd=dst, check=True, capture_output=True)


def prepare(work: Path, media: Path) -> tuple[Path, dict[str, str]]:
    standins = work / "standins"
    env = environment(standins) if standins.is_dir() else build_standins(standins, media)
    repo = work / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    copy_checkout(repo)
    (repo / "data" / "external").symlink_to(standins / "external", target_is_directory=True)
    return repo, env


def command() -> list[str]:
    return ["dvc", "exp", "run", "-S", "profile=paper", *[a for o in overrides() for a in ("-S", o)]]


def run(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    full = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
            "WANDB_MODE": "disabled", "PYTHONPATH": str(repo / "src")}
    return subprocess.run(command(), cwd=repo, env=full, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", nargs="?", type=Path, default=Path("/tmp/ipfacediff-rehearsal"))
    ap.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    args = ap.parse_args(argv)
    repo, env = prepare(args.work.resolve(), args.media)
    print(" ".join(command()))
    proc = run(repo, env)
    sys.stdout.write(proc.stdout[-5000:])
    sys.stderr.write(proc.stderr[-5000:])
    if proc.returncode == 0:
        print(f"tables: {repo / 'reports' / 'tables'}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
