"""The job layer over the pure engine (diffusion/): load the engine once, edit items, write outputs.

Used by the edit, invert and timing stages (timing.py: Table 2 rows), `ipfacediff edit/invert` and the web app. Nothing in
diffusion/ imports this package.
"""

from .checkpoint import WorkDir, edit_with_checkpoints, work_dir_for
from .engine import Engine, branch_dirs
from .jobs import EditJob, check_inversion, edit_item, plan_edits, run_edit_stage, source_inversion
from .records import RANDOM_WEIGHTS_NOTE, fingerprint, models_record, up_to_date, write_edit

__all__ = [
    "Engine", "branch_dirs", "EditJob", "check_inversion", "edit_item", "plan_edits", "run_edit_stage", "source_inversion",
    "RANDOM_WEIGHTS_NOTE", "fingerprint", "models_record", "up_to_date", "write_edit",
    "WorkDir", "edit_with_checkpoints", "work_dir_for",
]
