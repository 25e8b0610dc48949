"""Same artifacts anywhere: `dvc repro` in a fresh clone of HEAD reproduces the committed results, and
Snakemake in another fresh clone reproduces DVC's.

`make repro-check` (CI runs it after `make test`; two whole sample-profile runs, about twice the 4.8 min
the DVC half alone took on 2 idle cores; skipped by a plain pytest run):
  - every stage with no floating-point reduction (reports/metrics/tolerances.yaml `exact_stages`) gives
    outputs identical to the committed dvc.lock;
  - `dvc metrics diff` against the committed metrics stays within the per-metric tolerances, and the
    tracked training curves within theirs; no other tracked file changes;
  - a second `dvc repro` runs nothing;
  - `snakemake --cores all` on a fresh clone runs every rule, and every output of every stage, hashed as
    DVC hashes it, equals the DVC run's (bit for bit for the exact stages; elsewhere either identical or,
    where sums of floats may differ, the same files with metrics and curves within the same tolerances);
    a second Snakemake run has nothing to do;
  - a queued experiment (`dvc exp run --queue` with the README's `-C` paths, `dvc queue start`) re-runs
    only the stage its parameter reaches, and `dvc exp show` lists it beside the workspace.
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

from ipfacediff.dag import load_stages, rule_name

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.repro_check


def _run(args, cwd, timeout=3600):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(Path(cwd) / "src"), "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _tolerances(clone: Path) -> dict:
    return yaml.safe_load((clone / "reports" / "metrics" / "tolerances.yaml").read_text())


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
    tol = _tolerances(clone)
    committed = _lock(subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=clone, capture_output=True, text=True,
                                     check=True).stdout)
    fresh = _lock((clone / "dvc.lock").read_text())
    for stage in tol["exact_stages"]:
        assert _outs(fresh[stage]) == _outs(committed[stage]), f"{stage}: outputs differ from the committed dvc.lock"


def test_metrics_within_tolerance_and_nothing_else_moved(clone):
    tol = _tolerances(clone)
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
    committed = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=clone, capture_output=True, text=True, check=True).stdout
    return _curve_rows_problems(committed, (clone / rel).read_text(), rel, rules)


def _curve_rows_problems(old_text: str, new_text: str, rel: str, rules: dict) -> list[str]:
    old = list(csv.DictReader(io.StringIO(old_text), delimiter="\t"))
    new = list(csv.DictReader(io.StringIO(new_text), delimiter="\t"))
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


# --------------------------------------------------------------------------- Snakemake against DVC


@pytest.fixture(scope="module")
def snakemake_clone(tmp_path_factory):
    """A second fresh clone of HEAD, run by Snakemake as a user would (no --forceall: a fresh clone
    has nothing to reuse), then hashed by DVC (`dvc commit -f` writes the hashes of what Snakemake made
    into this clone's dvc.lock; the commands and parameters are the committed ones)."""
    dst = tmp_path_factory.mktemp("snakemake") / "ipfacediff"
    _run(["git", "clone", "-q", str(ROOT), str(dst)], ROOT)
    _run([str(BIN / "snakemake"), "-s", "workflow/Snakefile", "--cores", "all"], dst)
    _run(["dvc", "commit", "-f"], dst)
    return dst


def _flat_numbers(data, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a metrics JSON as dotted keys (as `dvc metrics diff` names them)."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _flat_numbers(value, f"{prefix}{key}.").items()}
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return {prefix.rstrip("."): float(data)}
    return {}


def _metric_problems(path: str, old: Path, new: Path, rules: dict) -> list[str]:
    a, b = _flat_numbers(json.loads(old.read_text())), _flat_numbers(json.loads(new.read_text()))
    if set(a) != set(b):
        return [f"{path}: keys differ ({sorted(set(a) ^ set(b))[:5]})"]
    return [f"{path}:{k} {a[k]} -> {b[k]} beyond {_tolerance(rules, k)}" for k in a
            if not _within(a[k], b[k], _tolerance(rules, k))]


def _files(root: Path, rel: str) -> list[str]:
    """Files of an output (itself, or those under a folder), as DVC sees them (.dvcignore applies)."""
    from dvc.repo import Repo

    top = root / rel
    if top.is_file():
        return [rel]
    with Repo(str(root)) as repo:
        ignore = repo.dvcignore
        return sorted(str(p.relative_to(root)) for p in top.rglob("*")
                      if p.is_file() and not ignore.is_ignored_file(str(p)))


def test_snakemake_runs_every_rule_and_a_rerun_has_nothing_to_do(snakemake_clone):
    stages = load_stages(snakemake_clone / "dvc.yaml", snakemake_clone / "params.yaml")
    missing = [st.name for st in stages if not (snakemake_clone / "logs" / f"{rule_name(st.name)}.log").is_file()]
    assert not missing, f"rules that did not run under Snakemake: {missing}"
    out = _run([str(BIN / "snakemake"), "-s", "workflow/Snakefile", "--cores", "all", "-n"], snakemake_clone)
    assert "Nothing to be done" in out, out[-3000:]


def test_snakemake_gives_the_dvc_runs_artifacts(clone, snakemake_clone):
    """Every output of every stage after Snakemake, against the same output after `dvc repro`."""
    tol = _tolerances(clone)
    dvc_run, smk_run = _lock((clone / "dvc.lock").read_text()), _lock((snakemake_clone / "dvc.lock").read_text())
    stages = {st.name: st for st in load_stages(clone / "dvc.yaml", clone / "params.yaml")}
    metric_files = {p for st in stages.values() for p in st.outs if p.startswith("reports/metrics/") and p.endswith(".json")
                    and not p.endswith(".info.json")}
    curves = {p for p in (o for st in stages.values() for o in st.outs) if p.startswith("reports/train/")}
    assert set(dvc_run) == set(smk_run) == set(stages), "stages differ between the two runs"
    problems, identical, moved = [], [], []
    for name, entry in dvc_run.items():
        smk_outs = _outs(smk_run[name])
        for path, md5 in _outs(entry).items():
            if smk_outs.get(path) == md5:
                identical.append(path)
                continue
            moved.append(path)
            if name in tol["exact_stages"]:
                problems.append(f"{name}: {path} differs (an exact stage: must be identical bit for bit)")
            elif path == "reports/metrics/timing.json":  # wall-clock seconds: only the same measurements
                if _flat_numbers(json.loads((clone / path).read_text())).keys() != \
                        _flat_numbers(json.loads((snakemake_clone / path).read_text())).keys():
                    problems.append(f"{name}: {path} measured different things")
            elif path in metric_files:
                problems += _metric_problems(path, clone / path, snakemake_clone / path, tol["metrics"])
            elif path in curves:
                problems += _curve_rows_problems((clone / path).read_text(), (snakemake_clone / path).read_text(),
                                                 path, tol["curves"])
            elif _files(clone, path) != _files(snakemake_clone, path):
                problems.append(f"{name}: {path} holds different files")
            # else: the same files, bytes moved by float sums (or wall-clock times: timing.json and the
            # report's Table 2); judged through the metrics and curves computed from them above
    assert not problems, "\n".join(problems)
    assert identical, "no output compared"
    print(f"\nSnakemake vs DVC: {len(identical)} outputs identical, {len(moved)} within tolerance: {moved}")


# --------------------------------------------------------------------------- a queued experiment


def test_a_queued_experiment_reruns_only_what_its_parameter_reaches(clone):
    """The README's queued sweep on the real DAG (one cheap experiment): `-C` from `ipfacediff.dag
    copy-paths` brings in the uncached persistent outputs, so only the report re-runs (without them the
    temporary workspace would retrain from step 0), and `dvc exp show` gives the comparison table."""
    import time

    from ipfacediff.dag import plan_experiment

    keep = _run([sys.executable, "-m", "ipfacediff.dag", "copy-paths"], clone).split()
    override = "report.side_by_side_height=96"
    assert plan_experiment(clone, [override]) == ["report"]
    _run(["dvc", "exp", "run", "--queue", *keep, "-n", "panels96", "-S", override], clone)
    _run(["dvc", "queue", "start", "-j", "1"], clone)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = _run(["dvc", "queue", "status"], clone)
        line = next((row for row in status.splitlines() if "panels96" in row), "")
        if "Success" in line or "Failed" in line:
            break
        time.sleep(5)
    logs = _run(["dvc", "queue", "logs", "panels96"], clone)
    assert "Success" in line, f"{status}\n{logs[-3000:]}"
    ran = {row.split("'")[1] for row in logs.splitlines() if row.startswith("Running stage")}
    assert ran == {"report"}, logs[-3000:]
    rows = list(csv.DictReader(io.StringIO(_run(["dvc", "exp", "show", "--csv"], clone))))
    exp = next(r for r in rows if r["Experiment"] == "panels96")
    workspace = next(r for r in rows if r["rev"] == "workspace")  # the state the experiment was queued from
    bookkeeping = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}
    differ = {col for col in exp if col not in bookkeeping and exp[col] != workspace[col]}
    assert differ == {"report.side_by_side_height"}, {c: (workspace[c], exp[c]) for c in differ}
    assert exp["report.side_by_side_height"] == "96"
