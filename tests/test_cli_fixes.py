"""Small things a newcomer hit, each fixed: metrics without a gallery, --version, --branches typo,
no face refused before the models load, SIGTERM during inversion, the record beside the output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ipfacediff.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def face_clip(media_dir, tmp_path_factory) -> Path:
    """6 frames of a GRID talking head (360x288, 25 fps) with its audio."""
    from ipfacediff.video import read_video, write_video

    src = media_dir / "videos" / "grid_bbaf2n.mpg"
    v = read_video(src, max_frames=6)
    out = tmp_path_factory.mktemp("fix_clip") / "talk.mp4"
    write_video(out, v.frames, v.fps, audio_from=src, audio_range_s=(0.0, 6 / float(v.fps)))
    return out


def test_metrics_identity_without_gallery(face_clip, capsys):
    code, out, err = run(["metrics", "identity", "--original", str(face_clip), "--edited", str(face_clip),
                          "--recognizer", "sface"], capsys)
    assert code == 0, err
    assert "cosine distance" in out and "rank" not in out  # no gallery: no retrieval columns


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    from ipfacediff import __version__

    assert capsys.readouterr().out.strip() == f"ipfacediff {__version__}"


def test_branches_typo_is_an_error(face_clip, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    code, _, err = run(["edit", str(face_clip), "-p", "glasses", "-o", str(out), "--models", str(tmp_path / "m"),
                        "--branches", str(tmp_path / "typo")], capsys)
    assert code == 2 and "typo" in err and "branches folder not found" in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_no_face_refused_before_models_load(tiny_models, tmp_path, capsys, monkeypatch):
    from ipfacediff.video import write_video

    frames = np.repeat(np.random.default_rng(0).integers(0, 255, (1, 64, 80, 3), dtype=np.uint8), 4, axis=0)
    src = write_video(tmp_path / "noface.mp4", frames, 10).path

    def no_loading(*a, **k):
        raise AssertionError("models were loaded before the face check")

    monkeypatch.setattr("ipfacediff.diffusion.models.load_components", no_loading)
    code, _, err = run(["edit", src, "-p", "glasses", "-o", str(tmp_path / "o.mp4"), "--models", str(tiny_models)], capsys)
    assert code == 2 and "no face" in err and "noface.mp4" in err
    assert {p.name for p in tmp_path.iterdir()} == {"noface.mp4"}


def test_record_beside_output_named_after_it(face_clip, tiny_models, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    code, _, err = run(["edit", str(face_clip), "-p", "glasses", "-o", str(out), "--models", str(tiny_models),
                             "--branches", "base", "--steps", "1"], capsys)
    assert code == 0, err
    assert {p.name for p in tmp_path.iterdir()} == {"x.mp4", "x.mp4.json"}  # as README and --help say


@pytest.mark.slow
def test_sigterm_during_inversion_leaves_no_temp_file(face_clip, tiny_models, tmp_path):
    """A real SIGTERM while `invert` writes its cache: exit 143, no .tmp.safetensors left."""
    cache = tmp_path / "c.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ipfacediff.cli", "invert", str(face_clip), "--cache", str(cache),
                             "--models", str(tiny_models), "--steps", "200"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".c.*.tmp.safetensors")):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    assert list(tmp_path.glob(".c.*.tmp.safetensors")), "inversion never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
