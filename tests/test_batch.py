"""`ipfacediff batch jobs.yaml`: videos x prompts x options, one record per output, resumable by
fingerprint (a half-written output is never taken as done), summary table; bad jobs files refused."""

from __future__ import annotations

import json

import pytest

from ipfacediff.cli import main
from ipfacediff.layout import record_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(grid_clip, tmp_path_factory):
    from ipfacediff.diffusion.models import build_tiny

    root = tmp_path_factory.mktemp("batch")
    grid_clip(5, "grid_lbbc2a", out=root / "clip.mp4")
    build_tiny(root / "models" / "base", seed=0)
    jobs = root / "jobs.yaml"
    jobs.write_text("output_dir: out\nvideos: [clip.mp4]\n"
                    "prompts: ['a photo of a person with blond hair', 'a photo of a smiling person']\n"
                    "defaults: {steps: 1, seed: 1, models: models/base, branches: base, crop_size: 64}\n")
    return root, jobs


def test_batch_runs_resumes_and_redoes_only_unfinished(setup, capsys):
    from ipfacediff.app.batch import load_jobs

    _, jobs = setup
    assert main(["batch", str(jobs)]) == 0
    out = capsys.readouterr().out
    items, out_dir = load_jobs(jobs)
    assert len(items) == 2 and "2 edited, 0 already done, 0 failed" in out
    assert (out_dir / "summary.md").read_text().count("| done |") == 2 and "| # | video | prompt |" in out
    for it in items:
        rec = json.loads(record_path(it.output).read_text())
        assert rec["batch"]["fingerprint"] == it.fingerprint and rec["prompt"] == it.prompt
        assert rec["output"]["frames"] == 5 and rec["config"]["steps"] == 1
    assert json.loads(record_path(items[0].output).read_text())["mask"]["region"] == "face_hair"
    assert json.loads(record_path(items[1].output).read_text())["mask"]["region"] == "face"

    # second run: everything done, nothing rewritten
    stamps = [it.output.stat().st_mtime_ns for it in items]
    assert main(["batch", str(jobs)]) == 0
    assert "0 edited, 2 already done" in capsys.readouterr().out
    assert [it.output.stat().st_mtime_ns for it in items] == stamps

    # a killed run: video present but record missing, plus a stray temporary file -> redone, tmp removed
    record_path(items[1].output).unlink()
    stray = items[1].output.parent / f".{items[1].output.stem}.abc123.tmp.mp4"
    stray.write_bytes(b"partial")
    # a record from other settings (fingerprint mismatch) is not done either
    rec0 = json.loads(record_path(items[0].output).read_text())
    rec0["batch"]["fingerprint"] = "0" * 64
    record_path(items[0].output).write_text(json.dumps(rec0))
    assert main(["batch", str(jobs)]) == 0
    assert "2 edited, 0 already done" in capsys.readouterr().out
    assert not stray.exists()
    assert json.loads(record_path(items[1].output).read_text())["batch"]["fingerprint"] == items[1].fingerprint


def test_bad_jobs_files_refused(tmp_path, capsys):
    cases = {
        "videos: [nope.mp4]\nprompts: [a]\n": "not found",
        "videos: [x.mp4]\n": "'prompts' must be a non-empty list",
        "videos: [x.mp4]\nprompts: ['  ']\n": "empty prompt",
        "videos: [x.mp4]\nprompts: [a]\noptions: [{stepz: 3}]\n": "unknown option(s) stepz",
        "videos: [x.mp4]\nprompts: [a]\nvidoes: []\n": "unknown key(s) vidoes",
        "videos: [\n": "not valid YAML",
    }
    for text, problem in cases.items():
        f = tmp_path / "jobs.yaml"
        f.write_text(text)
        assert main(["batch", str(f)]) == 2
        err = capsys.readouterr().err
        assert problem in err and "jobs.yaml" in err or "nope.mp4" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.yaml"]


def test_a_failing_item_does_not_stop_the_others(setup, tmp_path, capsys):
    import numpy as np

    from ipfacediff.video import write_video

    root, _ = setup
    write_video(tmp_path / "noface.mp4", np.zeros((3, 64, 64, 3), np.uint8), 10)
    (tmp_path / "clip.mp4").symlink_to(root / "clip.mp4")
    f = tmp_path / "jobs.yaml"
    f.write_text(f"videos: [noface.mp4, clip.mp4]\nprompts: [a photo of a smiling person]\n"
                 f"defaults: {{steps: 1, models: {root / 'models/base'}, branches: base, crop_size: 64}}\n")
    assert main(["batch", str(f)]) == 1
    out = capsys.readouterr().out
    assert "failed: " in out and "no face" in out and "1 edited, 0 already done, 1 failed" in out
    assert not list((tmp_path / "jobs_out").glob("noface/*.mp4"))
