"""Edit jobs: one (video, prompt, method) item -> <edits>/<method>/<prompt>/<vid>.mp4 + its JSON record.

`plan_edits` derives the items of one method from the prepped videos and the configured prompts;
`edit_video` edits the items of one video whose records are not current (only output-affecting
inputs are hashed: see settings.EditSettings for which edit settings those are) in pipeline calls of
up to `edit.prompts_per_pass` prompts, which share the source pass, and writes each item's outputs
atomically; `edit_item` is the one-item case; `run_edit_stage` is the DVC `edit` stage.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError
from ..layout import crops_dir, edit_path, inversion_path, meta_path, prepped_videos, record_path
from ..prompts import EditPrompt
from ..registry import Method, get_method
from ..settings import EditSettings, Settings
from .records import fingerprint, up_to_date, write_edit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditJob:
    """One output of the edit matrix."""

    video: str
    fps: str  # exact rate "num/den" from the prepped video's meta.json
    n_frames: int
    inversion: Path
    prompt: EditPrompt
    method: Method
    output: Path
    crops: Path  # the original's aligned crops (shown beside the edit in W&B)


def source_inversion(inversions: str | Path, vid: str, method: Method) -> Path:
    """The cache a method's source pass reads: base-model methods read the base-model cache when the
    identity branch is fine-tuned (the invert stage then keeps both)."""
    base = inversion_path(inversions, vid, base=True)
    return base if method.source_branch == "base" and base.is_file() else inversion_path(inversions, vid)


def plan_edits(prepped: str | Path, inversions: str | Path, out: str | Path, method: Method,
               prompts: list[EditPrompt]) -> list[EditJob]:
    """Every prompt x prepped video for `method`, prompt-major (the stage's order)."""
    jobs = []
    videos = prepped_videos(prepped)
    for prompt in prompts:
        for vid in videos:
            meta = json.loads(meta_path(prepped, vid).read_text())
            jobs.append(EditJob(vid, meta["fps"], int(meta["frames"]), source_inversion(inversions, vid, method), prompt,
                                method, edit_path(out, method.name, prompt.id, vid), crops_dir(prepped, vid)))
    return jobs


def check_inversion(cache, n_frames: int, components, branches, method: Method) -> None:
    """The cache must match the video's frames, the base weights and the method's source branch."""
    from ..diffusion.inversion import branch_fingerprint

    if cache.n_frames != n_frames:
        raise InputError(cache.path, f"stale inversion: {cache.n_frames} frames, the prepped video has {n_frames} (re-run invert)")
    if cache.meta.get("model_sha256") != components.model_hash:
        raise InputError(cache.path, "stale inversion: made with other base weights (re-run invert)")
    expected = branch_fingerprint(branches, "identity") if method.source_branch == "identity" else "base"
    if cache.meta.get("branch") != expected:
        what = "another identity branch" if method.source_branch == "identity" else (
            "the identity branch; this method's source pass uses the base model (invert.base_for_tokenflow)")
        raise InputError(cache.path, f"stale inversion: made with {what} (re-run invert)")


def job_record(job: EditJob, cache, edit: EditSettings, seed: int, profile: str | None, models_info: dict,
               sdpa: dict | None = None) -> dict:
    """The record written beside the output, with its fingerprint (of the output-affecting part).
    `sdpa`: the attention kernel the edit runs (diffusion.sdpa.check_sdpa), not fingerprinted."""
    runtime = {k: v for k, v in asdict(edit).items() if k not in edit.output_settings() and k not in ("methods", "prompts")}
    record = {
        "profile": profile, "method": asdict(job.method), "prompt": asdict(job.prompt), "seed": seed,
        "config": edit.output_settings(), "runtime": runtime, "models": models_info,
        "video": {"id": job.video, "fps": job.fps, "frames": job.n_frames},
        "inversion": {"file": str(cache.path), "data_sha256": cache.data_sha256, "steps": cache.steps,
                      "prompt": cache.prompt, "branch": cache.meta.get("branch")},
    }
    if sdpa is not None:
        record["sdpa"] = sdpa
    record["fingerprint"] = fingerprint(record)
    return record


def by_video(jobs: list[EditJob]) -> list[list[EditJob]]:
    """The jobs grouped by inversion cache (one per video for one method), videos in order of first
    appearance, each group in plan order."""
    groups: dict[Path, list[EditJob]] = {}
    for job in jobs:
        groups.setdefault(job.inversion, []).append(job)
    return list(groups.values())


def edit_item(engine, pipe, job: EditJob, edit: EditSettings, seed: int, profile: str | None = None,
              models_info: dict | None = None, run=None, sdpa: dict | None = None) -> dict:
    """Edit one item (skipped while its record is current); returns its summary row."""
    return edit_video(engine, pipe, [job], edit, seed, profile, models_info, run, sdpa)[0]


def edit_video(engine, pipe, jobs: list[EditJob], edit: EditSettings, seed: int, profile: str | None = None,
               models_info: dict | None = None, run=None, sdpa: dict | None = None) -> list[dict]:
    """Edit the items of ONE video (one inversion cache, one method) whose records are not current,
    `edit.prompts_per_pass` prompts per pipeline call: they share the source pass (1 + P source/edit
    passes instead of 2P), and each output equals that of a call with its prompt alone
    (pipeline.__call__). Returns one summary row per job, in order; an edited item's `seconds` is its
    share of the shared call plus its own decode and write."""
    import torch

    from ..diffusion.inversion import InversionCache
    from ..video import as_fraction

    if len({(j.inversion, j.method) for j in jobs}) != 1:
        raise ValueError("edit_video: the jobs must share one inversion cache and method")
    first = jobs[0]
    cache = InversionCache(first.inversion)
    check_inversion(cache, first.n_frames, engine.components, engine.branches, first.method)
    models_info = models_info if models_info is not None else engine.record()
    rows, pending = [], []
    for job in jobs:
        record = job_record(job, cache, edit, seed, profile, models_info, sdpa)
        row = {"profile": profile, "method": job.method.name, "prompt": job.prompt.id, "video": job.video, "frames": cache.n_frames}
        if up_to_date(job.output, record["fingerprint"]):
            rows.append({**row, "status": "up to date", "seconds": 0.0})
        else:
            rows.append(row)
            pending.append((job, record, row))
    for b in range(0, len(pending), edit.prompts_per_pass):
        shared = pending[b : b + edit.prompts_per_pass]
        t0 = time.perf_counter()
        results = pipe([job.prompt.target for job, _, _ in shared], cache, negative_prompt=edit.negative_prompt,
                       num_inference_steps=edit.steps, guidance_scale=edit.guidance_scale,
                       generator=torch.Generator().manual_seed(seed), method=first.method.name, output_type="latent")
        share_s = (time.perf_counter() - t0) / len(shared)
        for (job, record, row), result in zip(shared, results):
            t1 = time.perf_counter()
            write_edit(job.output, pipe.decode(result.latents), as_fraction(job.fps), {**record, "edit": result.info})
            seconds = share_s + time.perf_counter() - t1
            if run is not None:
                key = f"{job.prompt.id}/{job.video}"
                run.log_edit(f"edit/{key}", job.output, job.crops)
                run.log({f"seconds/{key}": seconds, f"edit_s/{key}": result.info["timings_s"]["edit"]})
            row.update(status="edited", seconds=seconds)
    return rows


def prune(out_dir: Path, keep: set[Path]) -> None:
    """Remove outputs of prompts/videos no longer configured (and emptied prompt folders)."""
    if not out_dir.is_dir():
        return
    keep = keep | {record_path(k) for k in keep}
    for f in out_dir.glob("*/*"):
        if f not in keep:
            f.unlink()
    for d in out_dir.iterdir():
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def run_edit_stage(settings: Settings, method_name: str, prepped, inversions, models, branches_dir, out,
                   prompts_file=None) -> list[dict]:
    """Edit every prepped video with every configured prompt using one method (the DVC `edit` stage):
    per video, the prompts not yet done in calls that share the source pass (`edit.prompts_per_pass`).

    Writes OUT/<method>/<prompt>/<vid>.mp4 + .mp4.json; returns one summary row per item.
    """
    from ..diffusion.sdpa import check_sdpa
    from ..prompts import EDIT_PROMPTS, select_prompts
    from ..tracking import edits_artifact, start_run
    from .engine import Engine, branch_dirs

    method = get_method(method_name)
    edit = settings.edit
    jobs = plan_edits(prepped, inversions, out, method, select_prompts(edit.prompts, prompts_file or EDIT_PROMPTS))
    used = branch_dirs(branches_dir, method.branches)
    engine = Engine.load(models, used, settings.device, settings.models.dtype, seed=settings.seed)
    pipe = engine.pipeline(edit, progress=True)
    models_info = engine.record()
    sdpa = check_sdpa(engine.components.unet)  # warns when a CUDA edit would run the math kernel
    rows: dict[int, dict] = {}
    uses = {"models-base": ("model", models), "inversions": ("inversions", inversions),
            **{f"branch-{b}": ("branch", Path(branches_dir) / b) for b in used}}
    produces = {edits_artifact(method.name): ("edits", Path(out) / method.name)}
    with start_run("edit", settings.as_params(), method=method.name, uses=uses, produces=produces) as run:
        for group in by_video(jobs):
            done = edit_video(engine, pipe, group, edit, settings.seed, settings.profile, models_info, run, sdpa)
            rows.update({id(job): row for job, row in zip(group, done)})
    prune(Path(out) / method.name, {job.output for job in jobs})
    return [rows[id(job)] for job in jobs]  # the plan's (prompt-major) order
