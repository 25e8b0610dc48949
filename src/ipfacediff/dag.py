"""dvc.yaml read as plain stages (matrix expanded, ${...} substituted) for workflow/Snakefile and tests.

DVC stays the source of truth for the DAG; Snakemake rules are generated from these stages
(`rule_specs`), with threads/resources from workflow/resources.yaml.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_VAR = re.compile(r"\$\{\s*([^}]+?)\s*\}")


def _lookup(name: str, scope: dict[str, Any]) -> Any:
    value: Any = scope
    for part in name.split("."):
        value = value[part]
    return value


def _substitute(value: Any, scope: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _VAR.fullmatch(value)
        if whole:
            return _lookup(whole.group(1), scope)
        return _VAR.sub(lambda m: str(_lookup(m.group(1), scope)), value)
    if isinstance(value, list):
        return [_substitute(v, scope) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, scope): _substitute(v, scope) for k, v in value.items()}  # DVC interpolates keys too
    return value


def _paths(entries: list[Any] | None) -> list[str]:
    """Paths of deps/outs entries, which are strings or {path: {options}} mappings."""
    out = []
    for entry in entries or []:
        out.extend(entry.keys() if isinstance(entry, dict) else [entry])
    return [str(p) for p in out]


def _persistent(entries: list[Any] | None) -> list[str]:
    """Paths of outs entries marked `persist: true` (DVC keeps them between runs)."""
    return [str(k) for e in entries or [] if isinstance(e, dict) for k, opts in e.items() if (opts or {}).get("persist")]


def _uncached(entries: list[Any] | None) -> list[str]:
    """Paths of outs entries marked `cache: false` (DVC hashes them but keeps no copy)."""
    return [str(k) for e in entries or [] if isinstance(e, dict) for k, opts in e.items()
            if (opts or {}).get("cache") is False]


def _param_keys(entries: list[Any] | None) -> list[str]:
    keys = []
    for entry in entries or []:
        if isinstance(entry, dict):  # {params-file: [keys]}
            for file_keys in entry.values():
                keys.extend(file_keys)
        else:
            keys.append(entry)
    return keys


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list[str]
    outs: list[str]
    params: list[str]
    param_values: dict[str, Any] = field(default_factory=dict)
    persist: list[str] = field(default_factory=list)  # outs DVC keeps between runs (subset of outs)
    uncached: list[str] = field(default_factory=list)  # outs DVC keeps no copy of (`cache: false`)

    @property
    def base_name(self) -> str:
        """The dvc.yaml stage a matrix combination (`edit@ours`) comes from."""
        return self.name.split("@", 1)[0]

    def is_dir_out(self, path: str) -> bool:
        return not Path(path).suffix or path.endswith("/")


def load_stages(dvc_yaml: str | Path, params_yaml: str | Path | dict) -> list[Stage]:
    """Every stage of dvc.yaml, matrix combinations expanded to `name@key` names as DVC names them
    (`params_yaml`: the parameters file, or the parameters themselves)."""
    spec = yaml.safe_load(Path(dvc_yaml).read_text())
    params = params_yaml if isinstance(params_yaml, dict) else yaml.safe_load(Path(params_yaml).read_text())
    scope = {**params, **(spec.get("vars") or [{}])[0]} if isinstance(spec.get("vars"), list) else dict(params)
    stages = []
    for name, body in (spec.get("stages") or {}).items():
        matrix = body.get("matrix")
        combos: list[tuple[str, dict[str, Any]]] = [(name, {})]
        if matrix:
            axes = {k: _substitute(v, scope) for k, v in matrix.items()}
            combos = []
            for values in itertools.product(*axes.values()):
                item = dict(zip(axes, values))
                combos.append((f"{name}@{'-'.join(str(v) for v in values)}", {"item": item}))
        for stage_name, extra in combos:
            local = {**scope, **extra}
            body_sub = _substitute({k: v for k, v in body.items() if k != "matrix"}, local)
            cmd = body_sub["cmd"]
            cmd = " && ".join(cmd) if isinstance(cmd, list) else cmd
            keys = _param_keys(body_sub.get("params"))
            stages.append(
                Stage(
                    name=stage_name,
                    cmd=cmd,
                    deps=_paths(body_sub.get("deps")),
                    outs=_paths(body_sub.get("outs")) + _paths(body_sub.get("metrics")) + _paths(body_sub.get("plots")),
                    params=keys,
                    param_values={k: _lookup(k, params) for k in keys},
                    persist=_persistent(body_sub.get("outs")),
                    uncached=_uncached(body_sub.get("outs")),
                )
            )
    return stages


def expand_parent_deps(stages: list[Stage]) -> dict[str, list[str]]:
    """Each stage's deps, with a folder that only CONTAINS other stages' outputs replaced by them.

    DVC links `data/edits` to the `data/edits/<method>` outputs of the edit matrix by path prefix;
    Snakemake matches inputs to outputs exactly, so it needs the outputs spelled out.
    """
    outs = [o.rstrip("/") for st in stages for o in st.outs]
    expanded = {}
    for st in stages:
        deps = []
        for dep in st.deps:
            d = dep.rstrip("/")
            inside = [o for o in outs if o.startswith(d + "/")]
            deps.extend(inside if inside and d not in outs else [dep])
        expanded[st.name] = deps
    return expanded


# --------------------------------------------------------------------------- Snakemake rules

FLAG_DIR = ".snakemake-flags"  # marker files standing for persistent outputs (git- and dvc-ignored)
LOG_DIR = "logs"  # one log per rule (dvc-ignored)


def rule_name(stage_name: str) -> str:
    return re.sub(r"\W", "_", stage_name)


@dataclass
class RuleSpec:
    """What the Snakefile needs to declare one rule; every field is a plain value fixed at generation
    time (a Snakefile rule built in a loop must not read the loop variable when its job runs)."""

    name: str
    cmd: str
    inputs: list[str]
    outputs: list[str]  # declared outputs (persistent outs replaced by `flag`)
    dir_outputs: list[str]  # the subset of `outputs` that are folders
    flag: str | None  # touched after success when the stage has persistent outs
    params: dict[str, Any]
    threads: int
    resources: dict[str, int]
    log: str


def load_resources(path: str | Path) -> dict[str, dict[str, int]]:
    """workflow/resources.yaml as {stage: {threads, mem_mb, gpu, runtime}}, defaults filled in."""
    table = yaml.safe_load(Path(path).read_text()) or {}
    default = dict(table.get("default") or {})
    return {name: {**default, **(row or {})} for name, row in (table.get("stages") or {}).items()} | {"*": default}


def rule_specs(stages: list[Stage], resources: dict[str, dict[str, int]]) -> list[RuleSpec]:
    """One RuleSpec per stage. Persistent outs (DVC `persist: true`: checkpoints, inversion caches) are
    NOT declared as Snakemake outputs, because Snakemake deletes a job's outputs before running it;
    a flag file under FLAG_DIR stands for them, and deps on them point at the flag instead."""
    flags = {st.name: f"{FLAG_DIR}/{rule_name(st.name)}.done" for st in stages if st.persist}
    persistent = {p.rstrip("/"): flags[st.name] for st in stages for p in st.persist}
    deps = expand_parent_deps(stages)
    specs = []
    for st in stages:
        inputs = []
        for dep in deps[st.name]:
            d = dep.rstrip("/")
            owner = next((flag for p, flag in persistent.items() if d == p or d.startswith(p + "/")), None)
            inputs.append(owner or dep)
        outputs = [o for o in st.outs if o.rstrip("/") not in persistent]
        row = resources.get(st.base_name, resources.get("*", {}))
        specs.append(RuleSpec(
            name=rule_name(st.name),
            cmd=st.cmd,
            inputs=list(dict.fromkeys(inputs)),
            outputs=outputs,
            dir_outputs=[o for o in outputs if st.is_dir_out(o)],
            flag=flags.get(st.name),
            params=st.param_values,
            threads=int(row.get("threads", 1)),
            resources={k: int(v) for k, v in row.items() if k != "threads"},
            log=f"{LOG_DIR}/{rule_name(st.name)}.log",
        ))
    return specs


# --------------------------------------------------------------------------- experiment plans


def downstream(stages: list[Stage], changed: set[str]) -> set[str]:
    """`changed` plus every stage that depends (by path, folder prefixes included) on their outputs."""
    def touches(dep: str, out: str) -> bool:
        d, o = dep.rstrip("/"), out.rstrip("/")
        return d == o or d.startswith(o + "/") or o.startswith(d + "/")

    result, grew = set(changed), True
    while grew:
        grew = False
        outs = [o for st in stages if st.name in result for o in st.outs]
        for st in stages:
            if st.name not in result and any(touches(d, o) for d in st.deps for o in outs):
                result.add(st.name)
                grew = True
    return result


def queue_copy_paths(stages: list[Stage]) -> list[str]:
    """Outputs a queued experiment must be given with `dvc exp run --queue -C <path>`: kept between runs
    (`persist`) but not cached (`cache: false`) nor tracked by git, so the temporary workspace a queued
    experiment runs in would lack them, and DVC would re-run their stages (training from step 0)."""
    return [p for st in stages for p in st.persist if p in st.uncached]


def plan_experiment(root: str | Path, overrides: list[str]) -> list[str]:
    """Stages `dvc exp run -S <overrides>` re-runs, judged against dvc.lock: a stage whose command or
    parameter values differ from its lock entry (or that has none), and everything downstream of it.
    Assumes code and data match the lock (`dvc status` reports those). Parameters are composed from
    conf/ with the overrides by Hydra, as DVC does. Exists because `dvc exp run --dry` needs every
    upstream output checked out in its temporary workspace and fails without it (DVC issue 10135)."""
    from .config import compose

    root = Path(root)
    stages = load_stages(root / "dvc.yaml", compose(overrides, conf_dir=root / "conf"))
    lock_file = root / "dvc.lock"
    # DVC writes dvc.lock as YAML 1.2 (`no` is a string there, False for PyYAML's 1.1): read it as DVC does
    from ruamel.yaml import YAML

    lock = (YAML(typ="safe").load(lock_file.read_text()) or {}).get("stages", {}) if lock_file.is_file() else {}
    direct = set()
    for st in stages:
        entry = lock.get(st.name)
        recorded = ((entry or {}).get("params") or {}).get("params.yaml", {})
        if entry is None or entry.get("cmd") != st.cmd or any(recorded.get(k) != v for k, v in st.param_values.items()):
            direct.add(st.name)
    affected = downstream(stages, direct)
    return [st.name for st in stages if st.name in affected]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m ipfacediff.dag", description="the DAG as DVC runs it")
    sub = ap.add_subparsers(dest="cmd", required=True)
    plan = sub.add_parser("plan", help="stages `dvc exp run -S ...` would re-run (a dry run that works on any checkout)")
    plan.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="Hydra override, as for `dvc exp run -S` (repeatable)")
    sub.add_parser("copy-paths", help="`-C PATH` options a queued experiment needs (`dvc exp run --queue $(...)`)")
    args = ap.parse_args(argv)
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        print(f"{root}: no dvc.yaml here (run from the repository root)", file=sys.stderr)
        return 2
    if args.cmd == "copy-paths":
        print(" ".join(f"-C {p}" for p in queue_copy_paths(load_stages(root / "dvc.yaml", root / "params.yaml"))))
        return 0
    try:
        names = plan_experiment(root, args.overrides)
    except Exception as e:  # Hydra's override and composition errors name the bad key
        print(f"plan: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print("\n".join(names) if names else "nothing to re-run: every stage matches dvc.lock")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
