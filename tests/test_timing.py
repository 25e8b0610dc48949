"""Timing/memory measurement, the timing stage and the benchmark script (tiny models, seconds)."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ipfacediff.diffusion import inversion as I
from ipfacediff.diffusion import models as M
from ipfacediff.diffusion import timing as T
from ipfacediff.diffusion.branches import BranchSet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()  # tiny models: one thread is as fast and immune to a busy machine
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("timing_models") / "base"
    M.build_tiny(out, seed=0)
    return out


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_measure_sees_a_known_allocation():
    with T.measure(torch.device("cpu")) as m:
        x = torch.ones(64 * 1024 * 1024)  # 256 MiB, touched
        time.sleep(0.05)
        del x
    assert 230 < m.peak_mb < 300 and m.peak_abs_mb > m.peak_mb and m.seconds >= 0.05 and m.kind == "cpu_rss"


def test_extend_frames_ping_pong():
    clip = np.arange(4)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    got = T.extend_frames(clip, 11)[:, 0, 0, 0].tolist()
    assert got == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]  # no jump cut, every length exact
    assert T.extend_frames(clip[:1], 3).shape == (3, 2, 2, 3)
    assert T.extend_frames(clip, 2).shape[0] == 2
    with pytest.raises(ValueError):
        T.extend_frames(clip[:0], 3)


def test_inversion_memory_does_not_grow_with_length(tiny_dir):
    """Peak RSS for 2x the frames within 1.2x: inversion streams frame batches to disk.

    The noise predictor is a cheap analytic one (memory, not the UNet, is under test) and 100 steps at
    256 px make an implementation holding every state of every frame use ~50 MB more for 64 frames
    than for 32 (ratio ~1.3), which this test would catch.
    """
    from test_inversion import GaussianDenoiser

    comps = M.load_components(tiny_dir)
    den = BranchSet(base=GaussianDenoiser(comps.scheduler.alphas_cumprod, 1.0))
    frames = T.synthetic_frames(64, 256)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        I.invert_video(comps, den, frames[:4], Path(tmp) / "warm.safetensors", "", 2, 8, progress=False)
        base = T.rss_bytes() / T.MB
        peaks = {}
        for n in (32, 64):
            with T.measure(comps.device) as m:
                I.invert_video(comps, den, frames[:n], Path(tmp) / f"{n}.safetensors", "", 100, 8, progress=False)
            peaks[n] = m.peak_abs_mb - base
        assert I.InversionCache(Path(tmp) / "64.safetensors").n_frames == 64
    assert peaks[64] <= 1.2 * peaks[32] + 4, peaks


def test_timing_rows_come_from_the_engines_pipeline(tiny_dir):
    """Timing edits with what `Engine.load` loaded and `engine.pipeline(edit)` built (the edit stage's
    and the CLI's path), never components it loaded itself."""
    from ipfacediff.editing import Engine
    from ipfacediff.editing.timing import timing_table
    from ipfacediff.settings import EditSettings

    engine = Engine.load(tiny_dir, {}, "cpu")
    built = []
    real = engine.pipeline

    def spy(edit=None, progress=True):
        built.append(edit)
        return real(edit, progress=progress)

    engine.pipeline = spy
    edit = EditSettings(steps=1, batch_size=2, keyframe_interval=2)
    rows = timing_table(engine, T.synthetic_frames(3, 64), [3, 2], edit, 1, warmup=False, progress=False)
    assert [r["frames"] for r in rows] == [2, 3] and built == [edit, edit]
    assert all(r["invert_s"] > 0 and r["edit_s"] > 0 for r in rows)


@pytest.mark.media
def test_timing_stage(tiny_dir, media_dir, tmp_path):
    import yaml

    from ipfacediff.face.prep import write_png
    from ipfacediff.video import iter_frames

    crops = tmp_path / "prepped" / "clip" / "crops"
    crops.mkdir(parents=True)
    import cv2

    for k, f in enumerate(iter_frames(media_dir / "videos" / "grid_lbbc2a.mpg", max_frames=3)):
        write_png(crops / f"{k:06d}.png", cv2.resize(f[20:220, 80:280], (64, 64), interpolation=cv2.INTER_AREA))
    (crops.parent / "meta.json").write_text(json.dumps({"fps": "10/1", "frames": 3}))  # a prepped video has both
    params = {"profile": "sample", "seed": 0, "device": "cpu", "wandb": {"mode": "disabled"}, "data": {"fps": 10},
              "models": {"dtype": "float32"}, "invert": {"steps": 2, "batch_size": 4},
              "edit": {"steps": 2, "batch_size": 4, "keyframe_interval": 4}, "timing": {"frames": [5, 3]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "reports" / "timing.json"
    stage = _load(ROOT / "stages" / "timing.py", "stage_timing")
    argv = ["--params", str(tmp_path / "params.yaml"), "--prepped", str(tmp_path / "prepped"), "--models", str(tiny_dir),
            "--branches", str(tmp_path / "no_branches"), "--out", str(out)]
    assert stage.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["profile"] == "sample" and res["models"]["base"]["weights"] == "random" and "random-weight" in res["note"]
    assert {"cpu", "cpu_cores", "torch", "device"} <= set(res["hardware"])
    assert [r["frames"] for r in res["rows"]] == [3, 5]
    for r in res["rows"]:
        assert r["invert_s"] > 0 and r["edit_s"] > 0 and r["total_s"] == pytest.approx(r["invert_s"] + r["edit_s"], abs=2e-3)
        assert r["seconds_video"] == pytest.approx(r["frames"] / 10) and r["peak_mem_mb"] >= 0
    params["timing"]["video"] = "absent"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert stage.main(argv) == 2  # unknown video: one-line error
    assert json.loads(out.read_text()) == res  # previous output untouched


def test_benchmark_script(tiny_dir, tmp_path):
    bench = _load(ROOT / "benchmarks" / "edit_speed.py", "edit_speed")
    out = tmp_path / "bench.json"
    assert bench.main(["--arch", "tiny", "--models", str(tiny_dir), "--frames", "3", "--steps", "2", "--batch-size", "2",
                       "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["arch"] == "tiny" and res["dtype"] == "float32" and res["rows"][0]["frames"] == 3
    assert res["hardware"]["torch_threads"] == 1 and "synthetic" in res["frames_source"]
