"""W&B runs, offline by default: every stage logs through `start_run`; `wandb sync` uploads later.

Mode comes from params (`wandb.mode`), overridden by the WANDB_MODE environment variable;
`disabled` makes every call a no-op. Runs are written under ./wandb/.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator


class Run:
    """A thin handle over a wandb run; logs nothing when W&B is disabled."""

    def __init__(self, wandb_run: Any | None):
        self._run = wandb_run

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


@contextmanager
def start_run(stage: str, params: dict[str, Any], group: str | None = None) -> Iterator[Run]:
    """Open a W&B run named after the stage, with the full params as its config."""
    mode = os.environ.get("WANDB_MODE") or params.get("wandb", {}).get("mode", "offline")
    if mode == "disabled":
        yield Run(None)
        return
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=params.get("wandb", {}).get("project", "ipfacediff"),
        job_type=stage,
        group=group or params.get("profile"),
        name=f"{stage}-{params.get('profile', 'sample')}",
        config=params,
        mode=mode,
        dir=os.environ.get("WANDB_DIR", "."),
        reinit="create_new",
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    try:
        yield Run(run)
    finally:
        run.finish()
