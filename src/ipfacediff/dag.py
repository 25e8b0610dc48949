"""dvc.yaml read as plain stages (matrix expanded, ${...} substituted) for workflow/Snakefile and tests.

DVC stays the source of truth for the DAG; Snakemake rules are generated from these stages.
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
        return {k: _substitute(v, scope) for k, v in value.items()}
    return value


def _paths(entries: list[Any] | None) -> list[str]:
    """Paths of deps/outs entries, which are strings or {path: {options}} mappings."""
    out = []
    for entry in entries or []:
        out.extend(entry.keys() if isinstance(entry, dict) else [entry])
    return [str(p) for p in out]


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

    def is_dir_out(self, path: str) -> bool:
        return not Path(path).suffix or path.endswith("/")


def load_stages(dvc_yaml: str | Path, params_yaml: str | Path) -> list[Stage]:
    """Every stage of dvc.yaml, matrix combinations expanded to `name@key` names as DVC names them."""
    spec = yaml.safe_load(Path(dvc_yaml).read_text())
    params = yaml.safe_load(Path(params_yaml).read_text())
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
