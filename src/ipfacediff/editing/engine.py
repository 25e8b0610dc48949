"""The engine, loaded once: diffusion components, the fine-tuned branches a job needs, on a device.

One loader for the edit stage, `ipfacediff edit/invert`, the invert and timing stages and the web app:
`Engine.load(models_dir, branch_dirs(branches_dir, names), device, dtype)`. Half precision is used on
an accelerator only: on the CPU it is slow or unsupported, so the CPU always computes in float32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ..diffusion.branches import BranchSet, load_branches
from ..diffusion.models import Components, load_components, resolve_device
from ..settings import EditSettings
from .records import RANDOM_WEIGHTS_NOTE, models_record

log = logging.getLogger(__name__)


def branch_dirs(branches_dir: str | Path, names: Iterable[str]) -> dict[str, Path | None]:
    """{branch: its folder under `branches_dir`, or None (base weights) where there is none}."""
    paths = {name: Path(branches_dir) / name for name in sorted(names)}
    return {name: path if path.exists() else None for name, path in paths.items()}


class Engine:
    """Components + a branch set. `pipeline(edit_settings)` builds the pure editor over them."""

    def __init__(self, components: Components, branches: BranchSet, models_dir: str | Path | None = None):
        self.components = components
        self.branches = branches
        self.models_dir = models_dir

    @classmethod
    def load(cls, models_dir: str | Path, branches: Mapping[str, str | Path | None] | None = None,
             device: str | torch.device = "cpu", dtype: str = "float32", seed: int | None = None) -> Engine:
        """Load the models folder onto `device` and attach `branches` ({name: folder or None})."""
        if seed is not None:  # any random init while attaching adapters is reproducible
            torch.manual_seed(seed)
        device = resolve_device(device)
        components = load_components(models_dir, device, dtype if device.type != "cpu" else "float32")
        engine = cls(components, load_branches(components.unet, dict(branches or {})), models_dir)
        if engine.random_weights:
            log.warning("%s: %s", models_dir, RANDOM_WEIGHTS_NOTE)
        return engine

    def with_branches(self, branches: Mapping[str, str | Path | None]) -> Engine:
        """The same components with another branch set (e.g. the identity branch switched off)."""
        return Engine(self.components, load_branches(self.components.unet, dict(branches)), self.models_dir)

    @property
    def random_weights(self) -> bool:
        return self.components.info.get("weights") == "random"

    def pipeline(self, edit: EditSettings | None = None, progress: bool = True):
        from ..diffusion.pipeline import IPFaceDiffPipeline

        return IPFaceDiffPipeline(self.components, self.branches, edit, progress=progress)

    def record(self) -> dict:
        """What edits are made with (models_record of this engine)."""
        return models_record(self.components, self.branches, self.models_dir)
