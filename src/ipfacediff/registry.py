"""Registries: the single source for the editing methods and the external baselines.

Everything that lists methods derives from `METHODS` / `BASELINES`: the `edit.methods` default
(settings.EditSettings, conf/config.yaml, checked by a test), the DVC edit matrix (`${edit.methods}`),
`ipfacediff edit --method` choices, the metrics' and report tables' row order and labels.

Adding a method: one `Method(...)` entry below (its branches and switches are all the engine needs)
plus a test; see README "Architecture".
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Method:
    """An editing method of the paper's tables: which branch runs the source pass (the original video:
    correspondences and injected features) and the edit pass, whether PnP injection runs, and whether
    joint keyframe attention + propagation runs. "base" means the base weights (no adapter)."""

    name: str
    source_branch: str  # "identity" | "base"
    edit_branch: str  # "directional" | "base"
    inject: bool  # PnP identity guidance (q/k + resblock features)
    propagate: bool  # joint keyframe attention + nearest-neighbour propagation
    description: str
    label: str = ""  # how tables name it ("" -> the name)
    order: int = 0  # row order in tables (ours first, ablations, then baselines)

    @property
    def branches(self) -> set[str]:
        """The fine-tuned branches this method loads (the base weights need none)."""
        return {self.source_branch, self.edit_branch} - {"base"}


@dataclass(frozen=True)
class Baseline:
    """A published method whose outputs are imported (metrics.external_methods), never run here."""

    name: str
    label: str
    order: int


def _methods(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in sorted(methods, key=lambda m: m.order)}


METHODS: dict[str, Method] = _methods(
    Method("ours", "identity", "directional", True, True,
           "identity-branch source pass, directional-branch edit, identity guidance, keyframe propagation",
           "IP-FaceDiff (ours, with ID guidance)", 0),
    Method("no_id_guidance", "identity", "directional", False, True,
           "as ours without identity guidance (no PnP injection)", "IP-FaceDiff w/o ID guidance", 10),
    Method("no_directional", "identity", "base", True, True,
           "as ours with the base weights in place of the directional branch", "no_directional", 20),
    Method("tokenflow", "base", "base", True, True,
           "TokenFlow: base model for both passes, PnP injection and keyframe propagation", "tokenflow", 30),
    Method("per_frame", "identity", "directional", True, False,
           "PnP per frame with ours' branches: no joint attention, no propagation", "per_frame", 40),
)

BASELINES: dict[str, Baseline] = {
    b.name: b for b in (
        Baseline("dva", "DVA (Kim et al., CVPR 2023)", 100),
        Baseline("stit", "STIT (Tzaban et al., 2022)", 110),
        Baseline("ltfe", "LTFE (Yao et al., ICCV 2021)", 120),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(None, f"unknown edit method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


def method_names() -> list[str]:
    """Engine methods in table order (the `edit.methods` default and the CLI's choices)."""
    return list(METHODS)


def _entry(name: str) -> Method | Baseline | None:
    return METHODS.get(name) or BASELINES.get(name)


def method_label(name: str) -> str:
    entry = _entry(name)
    return (entry.label or entry.name) if entry else name


def method_order(methods: list[str]) -> list[str]:
    """Ours first, then ablations, then baselines (registry order); unknown names alphabetically after."""
    methods = list(dict.fromkeys(methods))
    known = sorted((m for m in methods if _entry(m)), key=lambda m: _entry(m).order)
    return known + sorted(m for m in methods if not _entry(m))
