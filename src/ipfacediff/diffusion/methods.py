"""The editing methods compared in the paper's tables (params `edit.methods`).

Each is a choice of branch for the source pass (the original video: correspondences and injected
features) and for the edit pass, whether PnP injection runs, and whether joint keyframe attention +
propagation runs. "base" means the base weights (no adapter).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class Method:
    name: str
    source_branch: str  # "identity" | "base"
    edit_branch: str  # "directional" | "base"
    inject: bool  # PnP identity guidance (q/k + resblock features)
    propagate: bool  # joint keyframe attention + nearest-neighbour propagation
    description: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ours", "identity", "directional", True, True,
               "identity-branch source pass, directional-branch edit, identity guidance, keyframe propagation"),
        Method("no_id_guidance", "identity", "directional", False, True,
               "as ours without identity guidance (no PnP injection)"),
        Method("no_directional", "identity", "base", True, True,
               "as ours with the base weights in place of the directional branch"),
        Method("tokenflow", "base", "base", True, True,
               "TokenFlow: base model for both passes, PnP injection and keyframe propagation"),
        Method("per_frame", "identity", "directional", True, False,
               "PnP per frame with ours' branches: no joint attention, no propagation"),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(None, f"unknown edit method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]
