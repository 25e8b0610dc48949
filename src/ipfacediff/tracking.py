"""W&B runs, offline by default: every stage logs through `start_run`; `wandb sync` uploads later.

Mode comes from params (`wandb.mode`), overridden by the WANDB_MODE environment variable;
`disabled` makes every call a no-op (the test suite forces it: tests/conftest.py). Runs are written
under ./wandb/ (or WANDB_DIR).

What a synced project holds (README "Experiment tracking"):
  - one group per experiment: WANDB_RUN_GROUP if set, else the DVC experiment name (`dvc exp run`
    sets DVC_EXP_NAME), else `<profile>-<hash of the parameters>`, so every stage of one
    configuration lands in one group and two configurations never mix;
  - runs named by stage, method and prompt (`edit-ours`, `finetune_id`, ...), job_type = stage;
  - models, branches, inversions, edits and the report as artifacts whose inputs are declared with
    `use_artifact` and outputs with `log_artifact`, so the artifact graph is the DAG's lineage (W&B
    accepts inputs only online; an offline run records them in its config under `inputs`);
  - edit results as videos and side-by-side (original | edited) frames.
Artifacts are file references (checksummed, not copied): a multi-GB model folder costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

# artifact name -> (type, path); the names are the lineage graph's nodes
ArtifactSpec = Mapping[str, tuple[str, "str | Path"]]


def experiment_group(params: dict[str, Any]) -> str:
    """The W&B group of this experiment (see module docstring)."""
    for var in ("WANDB_RUN_GROUP", "DVC_EXP_NAME"):
        if os.environ.get(var):
            return os.environ[var]
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{params.get('profile', 'sample')}-{digest}"


def run_name(stage: str, method: str | None = None, prompt: str | None = None) -> str:
    return "-".join(p for p in (stage, method, prompt) if p)


def edits_artifact(method: str) -> str:
    """The artifact of one method's edits: produced by `edit@<method>`, used by the report."""
    return f"edits-{method}"


def edits_inputs(edits_dir: str | Path) -> dict[str, tuple[str, Path]]:
    """Every method's edits under `edits_dir` (one folder per method) as input artifacts."""
    root = Path(edits_dir)
    methods = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return {edits_artifact(p.name): ("edits", p) for p in methods}


class Run:
    """A thin handle over a wandb run; logs nothing when W&B is disabled."""

    def __init__(self, wandb_run: Any | None):
        self._run = wandb_run

    @property
    def enabled(self) -> bool:
        return self._run is not None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self._run is not None:
            self._run.log(metrics, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self._run is not None:
            self._run.summary.update(metrics)

    def log_table(self, key: str, dataframe: Any) -> None:
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Table(dataframe=dataframe)})

    def log_image(self, key: str, path: str) -> None:
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Image(path)})

    def log_edit(self, key: str, edited: str | Path, original_crops: str | Path | None = None, fps: float = 10) -> None:
        """An edited clip as a W&B video plus its middle frame beside the original crop (side by side)."""
        if self._run is None:
            return
        import wandb

        self._run.log({f"{key}/video": wandb.Video(str(edited), format="mp4"),
                       f"{key}/side_by_side": wandb.Image(side_by_side_frame(edited, original_crops),
                                                          caption="original | edited (middle frame)")})

    def use_artifact(self, name: str, kind: str, path: str | Path) -> None:
        """Declare `path` (a stage input) as this run's input artifact `name`. W&B refuses inputs in
        offline mode, so there the run's config records them (`inputs`: name, type, path) instead."""
        if self._run is None or not Path(path).exists():
            return
        if getattr(self._run, "offline", False):
            self._run.config.update({"inputs": {**dict(self._run.config.get("inputs", {})),
                                                name: {"type": kind, "path": str(path)}}}, allow_val_change=True)
        else:
            self._run.use_artifact(_artifact(name, kind, path))

    def log_artifact(self, name: str, kind: str, path: str | Path) -> None:
        """Log `path` (a stage output) as artifact `name`, produced by this run."""
        if self._run is not None and Path(path).exists():
            self._run.log_artifact(_artifact(name, kind, path))


def _artifact(name: str, kind: str, path: str | Path):
    import wandb

    art = wandb.Artifact(name, type=kind, metadata={"path": str(path)})
    # a reference: W&B checksums the files but copies nothing (model folders can be gigabytes)
    art.add_reference(Path(path).resolve().as_uri(), name=Path(path).name, checksum=True)
    return art


def side_by_side_frame(edited: str | Path, original_crops: str | Path | None):
    """(H, W or 2W, 3) uint8: the edited clip's middle frame, after the original crop at the same index."""
    import numpy as np

    from .video import read_video

    frames = read_video(edited).frames
    mid = len(frames) // 2
    out = np.asarray(frames[mid])
    crops = sorted(Path(original_crops).glob("*.png")) if original_crops else []
    if len(crops) > mid:
        from PIL import Image

        orig = np.asarray(Image.open(crops[mid]).convert("RGB").resize(out.shape[1::-1]))
        out = np.concatenate([orig, out], axis=1)
    return out


@contextmanager
def start_run(stage: str, params: dict[str, Any], group: str | None = None, method: str | None = None,
              prompt: str | None = None, uses: ArtifactSpec | None = None,
              produces: ArtifactSpec | None = None) -> Iterator[Run]:
    """Open a W&B run named after the stage (and method/prompt), in the experiment's group, with the
    full params as its config; `uses` are declared as input artifacts now, `produces` logged as output
    artifacts when the block ends without an error."""
    mode = os.environ.get("WANDB_MODE") or params.get("wandb", {}).get("mode", "offline")
    if mode == "disabled":
        yield Run(None)
        return
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=params.get("wandb", {}).get("project", "ipfacediff"),
        job_type=stage,
        group=group or experiment_group(params),
        name=run_name(stage, method, prompt),
        config=params,
        tags=[str(params.get("profile", "sample"))] + ([method] if method else []),
        mode=mode,
        dir=os.environ.get("WANDB_DIR", "."),
        reinit="create_new",
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    handle = Run(run)
    try:
        for name, (kind, path) in (uses or {}).items():
            handle.use_artifact(name, kind, path)
        yield handle
        for name, (kind, path) in (produces or {}).items():
            handle.log_artifact(name, kind, path)
    finally:
        run.finish()
