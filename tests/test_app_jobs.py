"""The web app's job queue without a browser: one job at a time in order, failures reported and
leave nothing half-written, the worker outlives any job, bad submissions refused."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ipfacediff.app.engine import EditOptions
from ipfacediff.app.jobs import JobQueue, phase_of
from ipfacediff.errors import InputError
from ipfacediff.fsio import atomic_path
from ipfacediff.layout import record_path


@pytest.fixture
def video(tmp_path):
    from ipfacediff.video import write_video

    p = tmp_path / "in.mp4"
    write_video(p, np.full((3, 32, 32, 3), 128, np.uint8), 10)
    return p


def _wait(pred, timeout=20.0):
    t0 = time.time()
    while not pred():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_one_job_at_a_time_in_order_and_failures_leave_nothing(tmp_path, video):
    active, peak, order = [0], [0], []
    lock = threading.Lock()

    def runner(src, dst, prompt, options):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            order.append(prompt)
            assert src.is_file() and src.parent == tmp_path / "work"  # the job's private copy
            with atomic_path(dst) as tmp_video, atomic_path(record_path(dst)) as tmp_json:
                tmp_video.write_bytes(b"video")
                time.sleep(0.15)
                if prompt == "bad input":
                    raise InputError(src, "no face found")
                if prompt == "crash":
                    raise RuntimeError("engine bug")
                tmp_json.write_text("{}")
        finally:
            with lock:
                active[0] -= 1

    q = JobQueue(tmp_path / "out", tmp_path / "work", runner=runner)
    jobs = [q.submit(video, "in.mp4", p, EditOptions())[0] for p in (["one", "two"], ["bad input"], ["crash"], ["four"])]
    _, msg = q.submit(video, "in.mp4", ["five"], EditOptions())
    assert "queued" in msg
    _wait(lambda: all(j.state in ("done", "failed") for j in q.snapshot()))
    assert peak[0] == 1 and order == ["one", "two", "bad input", "crash", "four", "five"]
    states = [j.state for j in q.snapshot()]
    assert states == ["done", "failed", "failed", "done", "done"]
    assert "no face found" in q.jobs[1].message and "RuntimeError: engine bug" in q.jobs[2].message
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*"))
    assert [w for w in written if "job0002" in w or "job0003" in w] == []  # failed jobs: nothing left
    assert len([w for w in written if w.endswith(".mp4")]) == 4 and not any("/." in w for w in written)
    assert not list((tmp_path / "work").iterdir())  # private input copies removed
    assert [p.name for p in jobs[0].outputs[:2]] == ["in-job1-01-one.mp4", "in-job1-01-one.mp4.json"]


def test_bad_submissions_refused(tmp_path, video):
    q = JobQueue(tmp_path / "out", tmp_path / "work", runner=lambda *a: None)
    with pytest.raises(InputError, match="no prompt"):
        q.submit(video, "in.mp4", ["", "  "], EditOptions())
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(InputError, match="junk.mp4"):
        q.submit(junk, "junk.mp4", ["glasses"], EditOptions())
    assert q.snapshot() == [] and not list((tmp_path / "out").iterdir())


def test_phase_names_follow_the_editor_bars():
    assert phase_of("track faces") == "track faces" and phase_of("invert talk") == "invert"
    assert phase_of("edit [ours]") == "edit" and phase_of("decode + paste back") == "decode + paste back"
    assert phase_of("encode") == "encode"
    assert phase_of("batch") is None
