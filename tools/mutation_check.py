"""Mutation check of the editing engine: every deliberate error in tools/mutants.py must make an
engine test fail.

For each mutant: copy src/ to a temporary folder, apply the mutant's exact text replacements there
(the working tree is never touched), and run the mutant's tests (`pytest -x -q`) against the copy,
with a per-mutant timeout. First the unmutated copy must pass the union of all the tests (otherwise
"killed" means nothing). A search text that no longer occurs exactly once is an error before anything
runs: the list cannot rot silently after a refactor.

Speed: torch/diffusers/transformers take most of a test process's start-up, so they are imported once
here and every test run is a fork of this process that imports ipfacediff from the mutated copy
(`--no-fork` runs a fresh interpreter per mutant instead). `-j 2` runs two mutants at once.

    python tools/mutation_check.py [-j N] [--only NAME ...] [--timeout S] [--result tools/mutation_result.json]

Exit status: 0 every mutant killed; 1 a mutant survived, timed out, or the baseline failed; 2 a stale
mutant (search text not found once).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(ROOT / "tools"))

from mutants import MUTANTS, Mutant  # noqa: E402  (tools/ is put on the path just above)

ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "WANDB_MODE": "disabled", "TF_CPP_MIN_LOG_LEVEL": "3"}


class StaleMutant(Exception):
    pass


def mutated_text(text: str, search: str, replace: str, where: str) -> str:
    n = text.count(search)
    if n != 1:
        raise StaleMutant(f"{where}: search text occurs {n} times (expected once): {search.strip()[:90]!r}")
    return text.replace(search, replace)


def check_mutants(mutants: list[Mutant]) -> list[str]:
    """Every edit of every mutant applies to the current source (edits of one file applied in order)."""
    problems = []
    names = [m.name for m in mutants]
    problems += [f"duplicate mutant name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    for m in mutants:
        texts: dict[str, str] = {}
        try:
            for rel, search, replace in m.edits:
                text = texts.get(rel) or (SRC / rel).read_text()
                texts[rel] = mutated_text(text, search, replace, f"{m.name}: {rel}")
        except (StaleMutant, FileNotFoundError) as e:
            problems.append(str(e))
        if not m.tests:
            problems.append(f"{m.name}: no tests listed")
    return problems


def make_copy(work: Path, mutant: Mutant | None) -> Path:
    dest = work / (mutant.name if mutant else "_baseline") / "src"
    shutil.copytree(SRC, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if mutant:
        for rel, search, replace in mutant.edits:
            path = dest / rel
            path.write_text(mutated_text(path.read_text(), search, replace, f"{mutant.name}: {rel}"))
    return dest


def warm_imports() -> None:
    """Third-party imports the engine tests need (never ipfacediff: each fork imports its own copy)."""
    import numpy  # noqa: F401
    import peft  # noqa: F401
    import pytest  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # noqa: F401
    from diffusers.models.attention_processor import AttnProcessor2_0  # noqa: F401
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401


def start(src_copy: Path, tests: tuple[str, ...], log: Path, fork: bool) -> int:
    """Start the tests against `src_copy`; returns the child's pid."""
    args = ["-x", "-q", "-p", "no:cacheprovider", *tests]
    if not fork:
        env = {**os.environ, **ENV, "PYTHONPATH": str(src_copy)}
        with open(log, "wb") as f:
            return subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).pid
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: never returns
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(ROOT)
        os.environ.update(ENV)
        os.environ["PYTHONPATH"] = str(src_copy)
        sys.path.insert(0, str(src_copy))
        import ipfacediff

        assert Path(ipfacediff.__file__).resolve().is_relative_to(src_copy.resolve()), ipfacediff.__file__
        import pytest
        import torch

        torch.set_num_threads(1)
        rc = int(pytest.main(args))
    except BaseException:  # noqa: BLE001 - the forked child must always reach os._exit
        traceback.print_exc()
        rc = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def first_failure(log: Path) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    m = re.search(r"^(FAILED|ERROR) (\S+)", text, re.MULTILINE)
    return m.group(2) if m else ""


def run_all(jobs: list[tuple[str, Path, tuple[str, ...]]], work: Path, n_parallel: int, timeout: float, fork: bool) -> dict:
    """jobs: (name, src copy, tests). Returns name -> {rc, seconds, failed_test, log}."""
    pending, running, done = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < n_parallel:
            name, src_copy, tests = pending.pop(0)
            log = work / f"{name}.log"
            running[start(src_copy, tests, log, fork)] = (name, time.monotonic(), log)
        time.sleep(0.2)
        for pid, (name, t0, log) in list(running.items()):
            waited, status = os.waitpid(pid, os.WNOHANG)
            elapsed = time.monotonic() - t0
            if waited == 0 and elapsed < timeout:
                continue
            if waited == 0:  # over time: stop this child (ours, by pid)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                rc = None
            else:
                rc = os.waitstatus_to_exitcode(status)
            del running[pid]
            done[name] = {"rc": rc, "seconds": round(elapsed, 1), "failed_test": first_failure(log), "log": log}
            print(f"  {name}: rc={rc} {elapsed:.0f}s {done[name]['failed_test']}", flush=True)
    return done


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def write_results(path: Path, record: dict) -> None:
    from_tmp = path.with_suffix(path.suffix + ".tmp")
    from_tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(from_tmp, path)
    rows = ["| mutant | file | outcome | killed by | s |", "|---|---|---|---|---|"]
    for m in record["mutants"]:
        rows.append(f"| {m['name']} | {', '.join(sorted({Path(f).name for f in m['files']}))} | {m['outcome']} | "
                    f"{m['killed_by'] or '-'} | {m['seconds']} |")
    md = path.with_suffix(".md")
    md.write_text(f"# Mutation check ({record['date']})\n\nCPU: {record['cpu']}; threads 1; "
                  f"{record['summary']['killed']}/{record['summary']['total']} killed; baseline "
                  f"{record['baseline']['outcome']} in {record['baseline']['seconds']} s; whole check "
                  f"{record['seconds']} s (`make mutation`).\n\n" + "\n".join(rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-j", "--jobs", type=int, default=1, help="mutants run at once")
    ap.add_argument("--only", nargs="*", help="mutant names (default: all)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    ap.add_argument("--no-fork", action="store_true", help="a fresh interpreter per mutant")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies and logs")
    ap.add_argument("--result", type=Path, default=ROOT / "tools" / "mutation_result.json")
    args = ap.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or []) - {m.name for m in MUTANTS}
    problems = check_mutants(MUTANTS) + [f"unknown mutant {n}" for n in sorted(unknown)]
    if problems:
        print("stale or broken mutant list (tools/mutants.py):\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    t_all = time.monotonic()
    fork = not args.no_fork and hasattr(os, "fork")
    if fork:
        warm_imports()
    work = Path(tempfile.mkdtemp(prefix="ipfacediff-mutation-"))
    try:
        all_tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        print(f"baseline: {len(all_tests)} tests on the unmutated source", flush=True)
        base = run_all([("_baseline", make_copy(work, None), all_tests)], work, 1, args.timeout * 2, fork)["_baseline"]
        if base["rc"] != 0:
            print(f"baseline FAILED (rc={base['rc']}, {base['failed_test']}); log:\n" + base["log"].read_text()[-3000:], file=sys.stderr)
            return 1
        print(f"{len(mutants)} mutants, {args.jobs} at a time", flush=True)
        jobs = [(m.name, make_copy(work, m), m.tests) for m in mutants]
        done = run_all(jobs, work, args.jobs, args.timeout, fork)
        rows = []
        for m in mutants:
            r = done[m.name]
            outcome = ("timeout" if r["rc"] is None else "survived" if r["rc"] == 0
                       else "killed" if r["rc"] == 1 else f"error (rc {r['rc']})")
            rows.append({"name": m.name, "why": m.why, "files": sorted({e[0] for e in m.edits}), "tests": list(m.tests),
                         "outcome": outcome, "killed_by": r["failed_test"], "seconds": r["seconds"]})
            if outcome.startswith("error"):
                print(f"{m.name}: test run error; log tail:\n" + r["log"].read_text(errors="replace")[-2000:], file=sys.stderr)
        killed = sum(r["outcome"] == "killed" for r in rows)
        import torch

        record = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(), "threads": 1,
            "python": platform.python_version(), "torch": torch.__version__, "mode": "fork" if fork else "subprocess",
            "seconds": round(time.monotonic() - t_all, 1),
            "baseline": {"outcome": "passed", "tests": list(all_tests), "seconds": base["seconds"]},
            "summary": {"total": len(rows), "killed": killed, "not_killed": [r["name"] for r in rows if r["outcome"] != "killed"]},
            "mutants": rows,
        }
        if not args.only:
            write_results(args.result, record)
        print(f"\n{killed}/{len(rows)} mutants killed in {record['seconds']} s on {record['cpu']}")
        for r in rows:
            print(f"  {r['outcome']:9s} {r['name']:36s} {r['killed_by']}")
        return 0 if killed == len(rows) else 1
    finally:
        if args.keep:
            print(f"copies and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
