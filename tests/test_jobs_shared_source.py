"""The edit stage edits the prompts of one video in one pipeline call sharing the source pass; each
output, latents and record equal a separate run's; items already done are skipped one by one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ipfacediff.diffusion.inversion import invert_video
from ipfacediff.diffusion.models import build_tiny
from ipfacediff.diffusion.pipeline import IPFaceDiffPipeline
from ipfacediff.diffusion.timing import synthetic_frames
from ipfacediff.editing import Engine, branch_dirs, run_edit_stage
from ipfacediff.editing.checkpoint import write_png_atomic
from ipfacediff.editing.jobs import EditJob, by_video
from ipfacediff.errors import InputError
from ipfacediff.layout import edit_path, inversion_path, record_path
from ipfacediff.prompts import select_prompts
from ipfacediff.registry import get_method
from ipfacediff.settings import EditSettings, settings_from_dict
from ipfacediff.video import read_video

N_FRAMES, STEPS = 9, 2
PROMPTS = ["glasses", "old", "smile"]


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    """models/base (tiny), prepped/v (9 frames), inversions/v.safetensors: what the edit stage reads."""
    root = tmp_path_factory.mktemp("stage")
    build_tiny(root / "models", seed=0)
    frames = synthetic_frames(N_FRAMES, 64, seed=3)
    crops = root / "prepped" / "v" / "crops"
    crops.mkdir(parents=True)
    for i, f in enumerate(frames):
        write_png_atomic(crops / f"{i:06d}.png", f)
    (root / "prepped" / "v" / "meta.json").write_text(json.dumps({"fps": "10/1", "frames": N_FRAMES}))
    engine = Engine.load(root / "models", branch_dirs(root / "branches", get_method("ours").branches))
    invert_video(engine.components, engine.branches, frames, inversion_path(root / "inversions", "v"), "a photo of a person",
                 steps=STEPS, progress=False)
    return root


@pytest.fixture
def calls(monkeypatch):
    """Every pipeline call of the stage: (prompts, [final latents per prompt])."""
    seen = []
    call = IPFaceDiffPipeline.__call__

    def spy(self, prompt, *args, **kwargs):
        out = call(self, prompt, *args, **kwargs)
        seen.append((list(prompt), [o.latents.clone() for o in out]))
        return out

    monkeypatch.setattr(IPFaceDiffPipeline, "__call__", spy)
    return seen


def stage(dag: Path, out: Path, prompts: list[str], **edit) -> list[dict]:
    settings = settings_from_dict({"edit": {"steps": STEPS, "keyframe_interval": 4, "batch_size": 4, "prompts": prompts, **edit}})
    return run_edit_stage(settings, "ours", dag / "prepped", dag / "inversions", dag / "models", dag / "branches", out)


def comparable(record_file: Path) -> dict:
    """The record without what differs by construction: where it was written, wall times, how many
    prompts shared the call, and the stored-state estimates that scale with that number (the mode
    they chose, `used`, is compared)."""
    rec = json.loads(record_file.read_text())
    for key in ("estimated_exact_gib", "estimated_bounded_gib", "reason"):  # the reason quotes the estimate
        rec["edit"]["keyframe_attention"].pop(key)
    rec["output"].pop("path")
    rec["edit"].pop("timings_s")
    rec["edit"].pop("prompts_sharing_source_pass")
    return rec


@pytest.mark.slow
def test_stage_shares_the_source_pass_and_matches_separate_runs(dag, tmp_path, calls):
    targets = {p.id: p.target for p in select_prompts(PROMPTS)}
    separate = {}
    for p in PROMPTS:
        rows = stage(dag, tmp_path / p, [p])
        assert [r["status"] for r in rows] == ["edited"]
        assert calls[-1][0] == [targets[p]]
        separate[p] = calls[-1][1][0]
    assert len(calls) == 3

    shared = tmp_path / "shared"
    done = edit_path(shared, "ours", "glasses", "v")  # one item already done: copied from its separate run
    done.parent.mkdir(parents=True)
    first = edit_path(tmp_path / "glasses", "ours", "glasses", "v")
    shutil.copy2(first, done)
    shutil.copy2(record_path(first), record_path(done))
    done_bytes = done.read_bytes()

    rows = stage(dag, shared, PROMPTS)
    assert [(r["prompt"], r["status"]) for r in rows] == [("glasses", "up to date"), ("old", "edited"), ("smile", "edited")]
    assert len(calls) == 4 and calls[-1][0] == [targets["old"], targets["smile"]]  # ONE call for the two not done
    assert done.read_bytes() == done_bytes
    for p, latents in zip(["old", "smile"], calls[-1][1]):
        assert torch.equal(latents, separate[p]), p  # bit-identical: same keyframes, same UNet batches per prompt
        mine, theirs = edit_path(shared, "ours", p, "v"), edit_path(tmp_path / p, "ours", p, "v")
        assert np.array_equal(read_video(mine).frames, read_video(theirs).frames), p
        assert comparable(record_path(mine)) == comparable(record_path(theirs)), p
        rec = json.loads(record_path(mine).read_text())
        assert rec["edit"]["prompts_sharing_source_pass"] == 2 and rec["sdpa"]["kernel"] == "flash_for_cpu"

    rows = stage(dag, shared, PROMPTS)  # all current: no call at all
    assert {r["status"] for r in rows} == {"up to date"} and len(calls) == 4


@pytest.mark.slow
def test_prompts_per_pass_bounds_the_prompts_of_one_call(dag, tmp_path, calls):
    rows = stage(dag, tmp_path, PROMPTS, prompts_per_pass=2)
    assert [r["status"] for r in rows] == ["edited"] * 3
    assert [len(prompts) for prompts, _ in calls] == [2, 1]


def test_prompts_per_pass_must_be_positive():
    with pytest.raises(InputError, match="prompts_per_pass"):
        EditSettings(prompts_per_pass=0)


def test_jobs_are_grouped_by_video_in_plan_order():
    method = get_method("ours")
    prompts = select_prompts(["glasses", "old"])
    jobs = [EditJob(v, "10/1", 4, Path(f"{v}.safetensors"), p, method, Path(f"{p.id}/{v}.mp4"), Path("c"))
            for p in prompts for v in ("b", "a")]  # prompt-major, as plan_edits makes them
    groups = by_video(jobs)
    assert [[(j.video, j.prompt.id) for j in g] for g in groups] == [[("b", "glasses"), ("b", "old")],
                                                                     [("a", "glasses"), ("a", "old")]]
