"""`ipfacediff edit` / `ipfacediff invert` on real face video: size, fps, frame count and audio kept,
background untouched, resolved config saved; bad input refused with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ipfacediff.cli import main
from ipfacediff.fsio import sha256_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    from ipfacediff.diffusion.models import build_tiny

    out = tmp_path_factory.mktemp("cli_models") / "base"
    build_tiny(out, seed=0)
    return out


@pytest.fixture(scope="module")
def clip(grid_clip) -> Path:
    """The first 10 frames of a GRID clip with its audio (conftest.grid_clip)."""
    return grid_clip(10)


def run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_edit_keeps_size_fps_frames_audio_and_background(clip, models_dir, tmp_path, capsys, caplog):
    from ipfacediff.video import probe, read_video

    out = tmp_path / "edited.mp4"
    code, stdout, err = run(["edit", str(clip), "-p", "a person with bangs, sunglasses and a French beard", "-o", str(out),
                             "--models", str(models_dir), "--branches", "base", "--steps", "2", "--seed", "3"], capsys)
    assert code == 0, err
    src, res = probe(clip), probe(out)
    assert (res.width, res.height, res.n_frames, res.fps) == (src.width, src.height, src.n_frames, src.fps)
    assert res.has_audio
    record = json.loads((tmp_path / "edited.mp4.json").read_text())  # as the README and --help say
    assert record["prompt"].startswith("a person with bangs") and record["seed"] == 3
    assert record["config"]["steps"] == 2 and record["config"]["crop_size"] == 64
    assert record["models"]["weights"] == "random" and "not meaningful" in record["models"]["note"]
    assert record["models"]["branches"] == {"identity": "base", "directional": "base"}
    assert len(record["edit"]["keyframes"]) == 2 and record["output"]["frames"] == 10
    assert any("random-weight" in r.getMessage() for r in caplog.records)
    a, b = read_video(clip).frames.astype(int), read_video(out).frames.astype(int)
    corner = (slice(0, 40), slice(0, 60))  # far from the face: pasted through a zero mask
    assert np.abs(a[:, corner[0], corner[1]] - b[:, corner[0], corner[1]]).mean() < 2.0  # codec noise only
    assert np.abs(a - b).max() > 20  # the face region was replaced


def test_invert_then_edit_from_cache(clip, models_dir, tmp_path, capsys):
    cache = tmp_path / "talk.safetensors"
    common = ["--models", str(models_dir), "--steps", "2"]
    code, stdout, err = run(["invert", str(clip), "--cache", str(cache), *common], capsys)
    assert code == 0, err
    assert cache.is_file()
    before = cache.stat().st_mtime_ns
    code, _, err = run(["edit", str(clip), "-p", "an old person", "-o", str(tmp_path / "old.mp4"), "--cache", str(cache),
                        "--method", "per_frame", *common], capsys)
    assert code == 0, err
    assert cache.stat().st_mtime_ns == before  # the valid cache was reused, not rewritten
    assert json.loads((tmp_path / "old.mp4.json").read_text())["edit"]["keyframes"] == []


def test_output_equal_to_input_refused(clip, models_dir, capsys, tmp_path):
    digest, names = sha256_file(clip), files(clip.parent)
    for target in (str(clip), str(clip.parent / "." / clip.name)):
        code, _, err = run(["edit", str(clip), "-p", "glasses", "-o", target, "--models", str(models_dir)], capsys)
        assert code == 2 and "refusing to overwrite the input" in err
    assert sha256_file(clip) == digest and files(clip.parent) == names


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_refused(clip, models_dir, tmp_path, capsys, prompt):
    code, _, err = run(["edit", str(clip), "-p", prompt, "-o", str(tmp_path / "o.mp4"), "--models", str(models_dir)], capsys)
    assert code == 2 and "empty prompt" in err and not list(tmp_path.iterdir())


def test_missing_model_folder_refused(clip, tmp_path, capsys):
    code, _, err = run(["edit", str(clip), "-p", "glasses", "-o", str(tmp_path / "o.mp4"), "--models", str(tmp_path / "nope")], capsys)
    assert code == 2 and "model folder not found" in err and not list(tmp_path.iterdir())


def test_video_without_face_refused_nothing_written(models_dir, tmp_path, capsys):
    from ipfacediff.video import write_video

    g = np.random.default_rng(0)
    frames = np.repeat(g.integers(0, 255, (1, 96, 128, 3), dtype=np.uint8), 6, axis=0)
    src = tmp_path / "noface.mp4"
    write_video(src, frames, 10)
    out = tmp_path / "out.mp4"
    code, _, err = run(["edit", str(src), "-p", "glasses", "-o", str(out), "--models", str(models_dir), "--steps", "2"], capsys)
    assert code == 2 and "no face" in err
    assert files(tmp_path) == {"noface.mp4"}


def test_bad_output_suffix_and_missing_input(clip, models_dir, tmp_path, capsys):
    code, _, err = run(["edit", str(clip), "-p", "glasses", "-o", str(tmp_path / "o.gif"), "--models", str(models_dir)], capsys)
    assert code == 2 and "output must end in" in err
    code, _, err = run(["edit", str(tmp_path / "none.mp4"), "-p", "glasses", "-o", str(tmp_path / "o.mp4")], capsys)
    assert code == 2 and "input video not found" in err
    assert not list(tmp_path.iterdir())
