"""Kill -9 an `ipfacediff edit` for real at seeded random moments in each phase (tracking, inversion,
denoising steps, decoding, writing), run it again each time: the final output is bit-identical to
an uninterrupted run, and nothing half-written is ever taken as done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from wild_clips import tone, write_clip

from ipfacediff.editing.checkpoint import work_dir_for
from ipfacediff.fsio import sha256_file

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

# phase -> "the process is in it now", from what the work folder holds (all writes are atomic)
PHASES = {
    "tracking": lambda w: w.is_dir() and not (w / "track.npz").exists(),
    "inversion": lambda w: any(w.glob(".inversion.*.tmp.safetensors")),
    "denoising": lambda w: (w / "edit_step.pt").exists() and not (w / "edit_latents.pt").exists(),
    "decoding": lambda w: (w / "edit_latents.pt").exists() and not any(w.glob(".output.*")),
    "writing": lambda w: any(w.glob(".output.*.tmp.*")),
}


def _cmd(src: Path, out: Path, models: Path) -> list[str]:
    return [sys.executable, "-m", "ipfacediff.cli", "edit", str(src), "-p", "a person with glasses", "-o", str(out),
            "--models", str(models), "--branches", "base", "--steps", "4", "--seed", "7"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def test_kill_9_anywhere_then_rerun_is_bit_identical(media_dir, tiny_models, tmp_path):
    from ipfacediff.video import read_video

    faces = list(read_video(media_dir / "videos" / "grid_bbaf2n.mpg", max_frames=8).frames)
    src = write_clip(tmp_path / "talk.mov", faces, pts=[0, 1, 2, 3, 5, 7, 9, 11], time_base=Fraction(1, 15), fmt="mov",
                     audio=tone(13 / 15, rate=16000), audio_rate=16000, audio_codec="pcm_s16le")
    ref = tmp_path / "ref" / "out.mp4"
    done = subprocess.run(_cmd(src, ref, tiny_models), env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "resumed" / "out.mp4"
    work = work_dir_for(out)
    rng = np.random.default_rng(0)
    killed = []
    for phase, inside in PHASES.items():
        proc = subprocess.Popen(_cmd(src, out, tiny_models), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not inside(work):
            time.sleep(0.005)
        if proc.poll() is None:
            time.sleep(float(rng.uniform(0, 0.05)))  # a random moment inside the phase
            proc.send_signal(signal.SIGKILL)
            killed.append(phase)
        proc.wait()
        if out.exists():  # the phase was over before we saw it: start again from nothing
            out.unlink()
            out.with_name(out.name + ".json").unlink()
    assert len(killed) >= 3, f"only killed during {killed}"  # timing-dependent, but most phases last long enough
    assert work.is_dir()  # the interrupted state is kept for the rerun
    final = subprocess.run(_cmd(src, out, tiny_models), env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr
    assert sha256_file(out) == sha256_file(ref), f"resumed after kills in {killed} differs from an uninterrupted run"
    assert not work.exists() and sorted(p.name for p in out.parent.iterdir()) == ["out.mp4", "out.mp4.json"]


def test_changed_arguments_start_afresh(tmp_path):
    from ipfacediff.editing.checkpoint import WorkDir

    w = WorkDir(tmp_path / "o.mp4", {"prompt": "a"})
    (w / "track.npz").write_bytes(b"x")
    assert WorkDir(tmp_path / "o.mp4", {"prompt": "a"}).resumed and (w / "track.npz").exists()
    w2 = WorkDir(tmp_path / "o.mp4", {"prompt": "b"})
    assert not w2.resumed and not (w2 / "track.npz").exists()  # another command's state is never reused


def test_step_checkpoint_resume_equals_uninterrupted(media_dir, tiny_models, tmp_path):
    """In process: the pipeline stopped after step k and resumed from its callback state gives the
    same latents, bit for bit, as one uninterrupted call (keyframe sampling included)."""
    import torch

    from ipfacediff.diffusion.branches import load_branches
    from ipfacediff.diffusion.inversion import InversionCache, invert_video
    from ipfacediff.diffusion.models import load_components
    from ipfacediff.diffusion.pipeline import EditConfig, IPFaceDiffPipeline

    comps = load_components(tiny_models)
    branches = load_branches(comps.unet, {"identity": None, "directional": None})
    frames = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    cache = InversionCache(invert_video(comps, branches, frames, tmp_path / "inv.safetensors", steps=4, progress=False))
    pipe = IPFaceDiffPipeline(comps, branches, EditConfig(steps=4, keyframe_interval=2, batch_size=2), progress=False)
    states = []
    full = pipe("glasses", cache, generator=torch.Generator().manual_seed(3),
                callback_on_step_end=lambda p, i, t, s: states.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}),
                output_type="latent")
    assert [s["step"] for s in states] == [1, 2, 3, 4]
    for k in (1, 2, 3):
        again = pipe("glasses", cache, generator=torch.Generator().manual_seed(999), resume=states[k - 1], output_type="latent")
        assert torch.equal(again.latents, full.latents)
        assert again.info["keyframes"] == full.info["keyframes"]


def test_prep_videos_stage_resumes_per_video_after_kill_9(media_dir, tmp_path):
    """The DAG's prep_videos stage killed -9 after its first video: the rerun keeps that video's
    folder (complete, same bytes and settings) and the result equals an uninterrupted run."""
    import json

    from ipfacediff.fsio import write_json

    media = tmp_path / "media"
    (media / "videos").mkdir(parents=True)
    entries = []
    for vid in ("grid_bbaf2n", "grid_lbbc2a", "grid_lwbsza"):
        shutil_copy = (media_dir / "videos" / f"{vid}.mpg").read_bytes()
        (media / "videos" / f"{vid}.mpg").write_bytes(shutil_copy)
        entries.append({"id": vid, "kind": "video", "file": f"videos/{vid}.mpg", "identity": vid,
                        "sha256": sha256_file(media / "videos" / f"{vid}.mpg")})
    write_json(media / "manifest.json", {"profile": "test", "source": "sample", "media": entries})
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"profile": "test", "data": {"videos": [e["id"] for e in entries], "fps": 10,
                                                              "max_seconds": 1.0, "crop_size": 48}}))
    cmd = [sys.executable, str(ROOT / "stages" / "prep_videos.py"), "--params", str(params), str(media)]
    ref = subprocess.run([*cmd, str(tmp_path / "ref")], env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "prepped"
    proc = subprocess.Popen([*cmd, str(out)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / entries[0]["id"] / "meta.json"
    while proc.poll() is None and not first.exists():
        time.sleep(0.005)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the stage finished before the first video was done"
    kept = first.stat().st_mtime_ns
    again = subprocess.run([*cmd, str(out)], env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert first.stat().st_mtime_ns == kept  # the finished video was not redone

    def contents(root):
        return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}

    assert contents(out) == contents(tmp_path / "ref")  # same bytes as one uninterrupted run
