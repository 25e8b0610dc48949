"""Video I/O with PyAV: exact timestamps, every frame, rotation applied, exact size, any audio.

Conventions (the contract other modules rely on):
- Frames are uint8 RGB arrays (H, W, 3), rotation metadata already applied (display orientation).
- `fps` is a `fractions.Fraction` (25, 30000/1001 stay exact); frame i is shown at i / fps.
- `rotation` is the display-matrix angle in degrees counter-clockwise (PyAV/FFmpeg convention:
  a phone clip tagged "rotate=90" reads as -90); flips in the display matrix are not applied.
- Frame counts are decoded counts: containers that declare a different number are not trusted.
- `probe` records each frame's presentation timestamp (`Timeline`); `write_video(..., timeline=)`
  writes them back unchanged, so variable-frame-rate clips stay variable and in sync with their audio.
- Size is kept exactly: even sizes are H.264 4:2:0 (yuv420p, what every player reads); odd sizes,
  which 4:2:0 cannot represent, are H.264 4:4:4 (yuv444p, High 4:4:4 profile) at the true size.
  Files written by older versions (padded to even, true size in the container comment) are cropped.
- Audio: stream copy where the output container takes the codec (and players read it: MP2 is not
  copied into MP4/MOV), otherwise decoded, resampled to what the encoder accepts and encoded (AAC).
"""

from __future__ import annotations

import functools
import io
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InputError
from .fsio import atomic_path

log = logging.getLogger(__name__)

SIZE_TAG = re.compile(r"ipfacediff:size=(\d+)x(\d+)")
# output suffix -> FFmpeg muxer
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
VIDEO_SUFFIXES = set(CONTAINERS)
# Audio codecs stream-copied into MP4/MOV. The muxer also takes MP2 (and a few others) but many
# players (browsers, QuickTime) refuse MP2-in-MP4, so those are re-encoded; Matroska takes anything
# its muxer accepts (PCM stays PCM).
PLAYER_SAFE_AUDIO = {
    "mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}),
    "mov": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"}),
}
AUDIO_ENCODER = "aac"  # when the source audio cannot be copied


@dataclass(frozen=True)
class Timeline:
    """Presentation times of the decoded frames: `pts[i] * time_base` seconds after frame 0.

    Strictly increasing (a repeated or backwards timestamp is moved one tick after its predecessor,
    which is what a player does when it shows every frame)."""

    pts: tuple[int, ...]
    time_base: Fraction

    def __len__(self) -> int:
        return len(self.pts)

    def seconds(self) -> np.ndarray:
        return np.array([float(p * self.time_base) for p in self.pts], dtype=np.float64)

    @classmethod
    def constant(cls, n: int, fps: Fraction) -> Timeline:
        return cls(tuple(range(n)), Fraction(1) / fps)


def _timeline(pts: list[int | None], time_base: Fraction | None, fps: Fraction) -> Timeline:
    """Relative, strictly increasing pts; frames without a timestamp are placed 1/fps after the last."""
    if time_base is None or not pts or pts[0] is None:
        return Timeline.constant(len(pts), fps)
    tick = max(1, round(1 / (fps * time_base))) if fps else 1
    out, prev = [], None
    for p in pts:
        p = prev + tick if p is None else p - pts[0]
        if prev is not None and p <= prev:
            p = prev + 1
        out.append(p)
        prev = p
    return Timeline(tuple(out), time_base)


@dataclass
class VideoInfo:
    path: str
    width: int  # display size (after rotation and size-tag crop)
    height: int
    fps: Fraction
    n_frames: int  # decoded count
    duration_s: float  # n_frames / fps
    has_audio: bool
    rotation: int = 0
    codec: str = ""
    audio_codec: str | None = None
    n_frames_declared: int = 0  # what the container claims (0: unknown)
    vfr: bool = False  # frame intervals deviate by more than half a frame from 1/fps
    timeline: Timeline | None = field(default=None, repr=False)  # every frame's timestamp

    @property
    def fps_str(self) -> str:
        return fraction_str(self.fps)

    def to_dict(self) -> dict:
        return {
            "path": self.path, "width": self.width, "height": self.height, "fps": self.fps_str,
            "fps_float": float(self.fps), "n_frames": self.n_frames, "duration_s": round(self.duration_s, 6),
            "has_audio": self.has_audio, "audio_codec": self.audio_codec, "rotation": self.rotation,
            "codec": self.codec, "n_frames_declared": self.n_frames_declared, "vfr": self.vfr,
        }


@dataclass
class Video:
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    fps: Fraction
    has_audio: bool
    path: str
    rotation: int = 0
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # presentation times (s), frame 0 at 0

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class WriteResult:
    path: str
    n_frames: int
    width: int  # true (unpadded) size
    height: int
    pad: tuple[int, int]  # (right, bottom) pixels added for the encoder
    fps: Fraction
    audio: str  # "none" | "copied <codec>" | "transcoded <codec> -> aac" | "dropped <codec>: <why>"
    pix_fmt: str = "yuv420p"
    timestamps: str = "constant"  # "constant" (i / fps) or "source" (the timeline passed in)

    @property
    def audio_carried(self) -> bool:
        return not self.audio.startswith("dropped")


def fraction_str(f: Fraction) -> str:
    """'25' or '30000/1001'."""
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def as_fraction(fps) -> Fraction:
    """Exact fps from a Fraction, int or 'num/den' string; floats snap to a /1001 or /1 rational."""
    if isinstance(fps, float):
        fps = Fraction(fps).limit_denominator(1001)
    try:
        f = Fraction(fps)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise InputError(None, f"fps {fps!r} is not a positive rational number") from e
    if f <= 0:
        raise InputError(None, f"fps {fps!r} must be positive")
    return f


# --------------------------------------------------------------------------------------- reading
def _open(path: str | Path):
    import av

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except av.error.EOFError as e:
        raise InputError(path, "contains no decodable video frames (stream ends before any data)") from e
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as e:
        raise InputError(path, f"not a readable video (FFmpeg: {_short(e)})") from e
    if not container.streams.video:
        container.close()
        raise InputError(path, "has no video stream")
    return container


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:160]


def _stream_fps(stream) -> Fraction | None:
    """Nominal rate: r_frame_rate when it agrees with the average (CFR), else the average (VFR)."""
    guessed, average = stream.guessed_rate, stream.average_rate
    if guessed and average and abs(guessed - average) / average < 0.02:
        return Fraction(guessed)
    return Fraction(average) if average else (Fraction(guessed) if guessed else None)


def _size_tag(container) -> tuple[int, int] | None:
    m = SIZE_TAG.search(container.metadata.get("comment", ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _norm_rotation(degrees: float) -> int:
    """Nearest multiple of 90 in (-180, 180]."""
    return (round(degrees / 90.0) * 90 + 179) % 360 - 179


def _to_rgb(frame, rotation: int, size: tuple[int, int] | None) -> np.ndarray:
    arr = frame.to_ndarray(format="rgb24")
    if size is not None and arr.shape[1] >= size[0] and arr.shape[0] >= size[1]:
        arr = arr[: size[1], : size[0]]  # undo write_video's even-size padding
    if rotation % 360:
        arr = np.ascontiguousarray(np.rot90(arr, k=(rotation // 90) % 4))
    return arr


def iter_timed_frames(path: str | Path, max_frames: int | None = None) -> Iterator[tuple[float, np.ndarray, int]]:
    """Yield (time_s relative to the first frame, RGB frame, rotation) for every decoded frame."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size, t0, i = _size_tag(container), None, 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and i >= max_frames:
                    break
                t = float(frame.time) if frame.time is not None else i / float(_stream_fps(stream) or 25)
                t0 = t if t0 is None else t0
                rotation = _norm_rotation(frame.rotation)
                yield t - t0, _to_rgb(frame, rotation, size), rotation
                i += 1
        except av.error.FFmpegError as e:
            raise InputError(path, f"corrupt video data after {i} frames (FFmpeg: {_short(e)})") from e
        if i == 0:
            raise InputError(path, "contains no decodable video frames")
    finally:
        container.close()


def iter_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Stream RGB frames (rotation applied) without holding the video in memory."""
    for _, arr, _ in iter_timed_frames(path, max_frames):
        yield arr


def _container_facts(path: str | Path) -> tuple[Fraction | None, bool, str | None, str, int]:
    container = _open(path)
    try:
        v = container.streams.video[0]
        a = container.streams.audio[0] if container.streams.audio else None
        return _stream_fps(v), a is not None, (a.codec_context.name if a else None), v.codec_context.name, int(v.frames or 0)
    finally:
        container.close()


def _fps_from_times(times: np.ndarray) -> Fraction:
    if len(times) < 2:
        return Fraction(25)
    return Fraction(1.0 / float(np.median(np.diff(times)))).limit_denominator(1001)


def _is_vfr(times: np.ndarray, fps: Fraction) -> bool:
    return len(times) > 2 and bool(np.any(np.abs(np.diff(times) - 1.0 / float(fps)) > 0.5 / float(fps)))


def read_video(path: str | Path, max_frames: int | None = None) -> Video:
    """Decode every frame (or the first `max_frames`) into memory."""
    fps, has_audio, _, _, _ = _container_facts(path)
    times, frames, rotation = [], [], 0
    for t, arr, rotation in iter_timed_frames(path, max_frames):
        times.append(t)
        frames.append(arr)
    times_a = np.asarray(times, dtype=np.float64)
    return Video(np.stack(frames), fps or _fps_from_times(times_a), has_audio, str(path), rotation, times_a)


def probe(path: str | Path) -> VideoInfo:
    """Stream facts; the frame count is decoded (containers such as MPEG-PS do not store one)."""
    import av

    fps, has_audio, audio_codec, codec, declared = _container_facts(path)
    container = _open(path)
    times, pts, time_base, n, rotation, shape = [], [], None, 0, 0, None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size = _size_tag(container)
        try:
            for frame in container.decode(stream):
                if n == 0:
                    rotation = _norm_rotation(frame.rotation)
                    w, h = (frame.width, frame.height) if size is None else size
                    shape = (h, w) if rotation % 180 == 0 else (w, h)
                    time_base = Fraction(frame.time_base) if frame.time_base else None
                if frame.time is not None:
                    times.append(float(frame.time))
                pts.append(frame.pts)
                n += 1
        except av.error.FFmpegError as e:
            raise InputError(path, f"corrupt video data after {n} frames (FFmpeg: {_short(e)})") from e
    finally:
        container.close()
    if n == 0:
        raise InputError(path, "contains no decodable video frames")
    times_a = np.asarray(times) - (times[0] if times else 0.0)
    fps = fps or _fps_from_times(times_a)
    if declared and declared != n:
        log.warning("%s: container declares %d frames, decoded %d (using the decoded count)", path, declared, n)
    return VideoInfo(
        path=str(path), width=shape[1], height=shape[0], fps=fps, n_frames=n, duration_s=float(n / fps),
        has_audio=has_audio, rotation=rotation, codec=codec, audio_codec=audio_codec,
        n_frames_declared=declared, vfr=_is_vfr(times_a, fps), timeline=_timeline(pts, time_base, fps),
    )


def resample_indices(times: np.ndarray, fps: Fraction, max_seconds: float | None = None) -> np.ndarray:
    """Nearest source frame for each output timestamp k / fps (exact rational grid), k >= 0.

    Output covers [0, min(duration, max_seconds)), where duration = last time + one source interval.
    """
    times = np.asarray(times, dtype=np.float64)
    if len(times) == 0:
        return np.zeros(0, dtype=np.int64)
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    duration = times[-1] + step if step > 0 else float(1 / fps)
    if max_seconds is not None:
        duration = min(duration, float(max_seconds))
    n_out = max(1, int(np.ceil(duration * float(fps) - 1e-9)))  # every k with k / fps < duration
    grid = np.array([float(Fraction(k) / fps) for k in range(n_out)])
    idx = np.searchsorted(times, grid)
    idx = np.clip(idx, 1, len(times) - 1) if len(times) > 1 else np.zeros_like(idx)
    if len(times) > 1:
        left_closer = (grid - times[idx - 1]) <= (times[idx] - grid) + 1e-9  # ties -> earlier frame
        idx = np.where(left_closer, idx - 1, idx)
    return idx.astype(np.int64)


# --------------------------------------------------------------------------------------- writing
def _as_rgb_frame(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"frames must be (H, W, 3) RGB, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def _audio_source(audio_from: str | Path | None):
    """(container, audio stream, first video time) or None when there is no audio to carry."""
    if audio_from is None:
        return None
    container = _open(audio_from)
    if not container.streams.audio:
        container.close()
        return None
    v = container.streams.video[0]
    t0 = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
    return container, container.streams.audio[0], t0


def muxer_accepts(container_format: str, stream) -> bool:
    """Whether FFmpeg's `container_format` muxer takes `stream`'s codec by stream copy (asked of
    the muxer itself: a header is written to memory)."""
    import av

    try:
        with av.open(io.BytesIO(), mode="w", format=container_format) as probe_out:
            probe_out.add_stream_from_template(stream)
            probe_out.start_encoding()
    except (av.error.FFmpegError, ValueError, TypeError):
        return False
    return True


def _copyable(container_format: str, stream) -> bool:
    codec = stream.codec_context.name
    safe = PLAYER_SAFE_AUDIO.get(container_format)
    return (safe is None or codec in safe) and muxer_accepts(container_format, stream)


def _encoder_settings(src_ctx) -> dict:
    """Sample format, rate and layout the AAC encoder accepts, closest to the source's."""
    import av

    codec = av.Codec(AUDIO_ENCODER, "w")
    rates = sorted(codec.audio_rates or [48000])
    rate = src_ctx.sample_rate or 48000
    if rate not in rates:  # the next supported rate up (no lost bandwidth), else the highest
        rate = next((r for r in rates if r >= rate), rates[-1])
    channels = src_ctx.channels or len(src_ctx.layout.channels)
    layout = "mono" if channels == 1 else "stereo"  # more channels are downmixed by the resampler
    return {"format": codec.audio_formats[0].name, "rate": rate, "layout": layout}


def _trimmed(frame, t_shift: float, end_s: float | None):
    """(`frame` cut to the output span [0, end_s), its first sample's output time) or None; times
    are relative to the first video frame (`t_shift` seconds into the source)."""
    import av

    if frame.time is None:
        return frame, None
    rate = frame.sample_rate
    t = float(frame.time) - t_shift
    first = max(0, round(-t * rate))
    last = frame.samples if end_s is None else min(frame.samples, round((end_s - t) * rate))
    if last <= first:
        return None
    if first == 0 and last == frame.samples:
        return frame, t
    arr = frame.to_ndarray()
    ch = 1 if frame.format.is_planar else len(frame.layout.channels)
    part = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr[:, first * ch:last * ch]), format=frame.format.name,
                                      layout=frame.layout.name)
    part.sample_rate = rate
    return part, t + first / rate


def _encode_audio(out, src, out_stream, t_shift: float, end_s: float | None) -> str | None:
    """Decode, cut, resample and encode the source audio, silence-padded at the start so the
    first sample plays at its own time relative to the first video frame. Returns a problem
    (decoding stopped early) or None."""
    import av

    container, a, _ = src
    ctx = out_stream.codec_context
    resampler = av.AudioResampler(format=ctx.format.name, layout=ctx.layout.name, rate=ctx.sample_rate,
                                  frame_size=ctx.frame_size or 1024)
    written, started, problem = 0, False, None  # written: samples at the output rate

    def encode(frames):
        nonlocal written
        for rf in frames:
            rf.pts, rf.time_base = written, Fraction(1, ctx.sample_rate)
            written += rf.samples
            for pkt in out_stream.encode(rf):
                out.mux(pkt)

    try:
        for frame in container.decode(a):
            cut = _trimmed(frame, t_shift, end_s)
            if cut is None:
                continue
            frame, t = cut
            if not started and t is not None and t > 0:  # audio starts after the video: keep its offset
                encode(resampler.resample(_silence(round(t * frame.sample_rate), frame)))
            started = True
            frame.pts = None  # the resampler and the counter above own the timing from here
            encode(resampler.resample(frame))
    except av.error.FFmpegError as e:
        problem = f"audio decoding stopped after {written / ctx.sample_rate:.2f} s ({_short(e)})"
    encode(resampler.resample(None))
    for pkt in out_stream.encode(None):
        out.mux(pkt)
    return problem


def _silence(n: int, like):
    """`n` samples of silence in the format, layout and rate of the audio frame `like`."""
    import av

    channels = len(like.layout.channels)
    shape = (channels, n) if like.format.is_planar else (1, n * channels)
    zero = 128 if like.format.name.startswith("u8") else 0  # unsigned 8-bit PCM is centred on 128
    arr = np.full(shape, zero, dtype=like.to_ndarray().dtype)
    f = av.AudioFrame.from_ndarray(arr, format=like.format.name, layout=like.layout.name)
    f.sample_rate = like.sample_rate
    return f


def _copy_audio(out, src, out_stream, t_shift: float, end_s: float | None) -> None:
    container, a, _ = src
    shift = round(t_shift / a.time_base)
    for pkt in container.demux(a):
        if pkt.dts is None or pkt.pts is None:
            continue
        t = float(pkt.pts * a.time_base) - t_shift
        if t < 0 or (end_s is not None and t >= end_s):
            continue
        pkt.pts, pkt.dts = pkt.pts - shift, pkt.dts - shift
        pkt.stream = out_stream
        out.mux(pkt)


def _audio_plan(container_format: str, src) -> tuple[str, str]:
    """("copy" | "encode" | "drop", note) for the source audio going into `container_format`."""
    import av

    a = src[1]
    codec = a.codec_context.name if a.codec_context else "unknown"
    if _copyable(container_format, a):
        return "copy", f"copied {codec}"
    try:
        av.Codec(codec, "r")
    except (av.error.FFmpegError, ValueError):
        return "drop", f"dropped {codec}: FFmpeg has no decoder for it"
    if not a.codec_context.sample_rate:
        return "drop", f"dropped {codec}: the stream declares no sample rate"
    return "encode", f"transcoded {codec} -> {AUDIO_ENCODER}"


def _video_stream(out, w: int, h: int, fps: Fraction, time_base: Fraction, crf: int, lossless: bool, preset: str):
    vs = out.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
    vs.width, vs.height = w, h
    # 4:2:0 cannot represent odd sizes; 4:4:4 can (exact size, High 4:4:4 profile)
    vs.pix_fmt = "rgb24" if lossless else ("yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p")
    vs.time_base = time_base
    vs.codec_context.time_base = time_base
    vs.options = {"crf": "0" if lossless else str(int(crf)), "preset": preset}
    asm = x264_asm(cpu_flags())
    if asm is not None:
        vs.options = {**vs.options, "x264-params": f"asm={asm}"}
    return vs


# x264 SIMD levels below AVX-512 -> the /proc/cpuinfo flag that says the CPU has it
X264_CPU_FLAGS = {"MMX2": "sse", "SSE": "sse", "SSE2": "sse2", "SSE3": "pni", "SSSE3": "ssse3", "SSE4.1": "sse4_1",
                  "SSE4.2": "sse4_2", "LZCNT": "abm", "AVX": "avx", "XOP": "xop", "FMA4": "fma4", "FMA3": "fma",
                  "BMI1": "bmi1", "BMI2": "bmi2", "AVX2": "avx2"}


def x264_asm(flags: frozenset[str]) -> str | None:
    """x264's `asm` setting for a CPU with these /proc/cpuinfo `flags`: every SIMD level it has except
    AVX-512, or None (x264's own detection) on CPUs without AVX-512 or of unknown flags.

    Why: x264's AVX-512 kernels read uninitialised memory (from x264's own buffers), so the same
    frames encode to different bytes depending on what the process allocated before (an edit after
    an edit in one process differed by up to 24 px; tests/test_determinism.py). x264's asm of every
    level is bit-exact to its C code, so leaving AVX-512 out changes nothing but that; measured on
    720p: same bytes as a fresh process, same speed."""
    if not any(f.startswith("avx512") for f in flags):
        return None
    names = [name for name, flag in X264_CPU_FLAGS.items() if flag in flags]
    if "SSSE3" in names:
        names.append("SSE2Fast")  # what x264's own detection adds with SSSE3 (fast unaligned SSE2)
    return ",".join(names)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (Linux /proc/cpuinfo); empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps,
    audio_from: str | Path | None = None,
    crf: int = 18,
    lossless: bool = False,
    preset: str = "medium",
    audio_range_s: tuple[float, float | None] | None = None,
    timeline: Timeline | None = None,
) -> WriteResult:
    """Encode every frame atomically, at exactly `fps` (frame i at i / fps) or, with `timeline`,
    at the source's own timestamps (VFR stays VFR; frame i at timeline.pts[i] * time_base).

    H.264 (crf) at the frames' exact size (see the module docstring for the pixel format);
    `lossless=True` writes libx264rgb at crf 0 (bit-exact RGB, few players read it). Audio from
    `audio_from` is copied or encoded (see `_audio_plan`), aligned to its first video frame,
    optionally restricted to `audio_range_s` = (start, end) seconds from that frame. Audio that
    cannot be carried is dropped with a warning and said so in `WriteResult.audio`.
    """
    import av

    path = Path(path)
    container_format = CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise InputError(path, f"output must end in one of {', '.join(sorted(VIDEO_SUFFIXES))}")
    fps = as_fraction(fps)
    time_base = timeline.time_base if timeline is not None else Fraction(1) / fps
    it = iter(frames)
    try:
        first = _as_rgb_frame(next(it))
    except StopIteration:
        raise InputError(path, "no frames to write") from None
    h, w = first.shape[:2]
    src = _audio_source(audio_from)
    start_s, end_s = (audio_range_s or (0.0, None))
    audio_note, n = "none", 0
    try:
        with atomic_path(path) as tmp:
            out = av.open(str(tmp), mode="w", format=container_format)
            try:
                vs = _video_stream(out, w, h, fps, time_base, crf, lossless, preset)
                astream, plan = None, "drop"
                if src is not None:
                    plan, audio_note = _audio_plan(container_format, src)
                    if plan == "copy":
                        astream = out.add_stream_from_template(src[1])
                    elif plan == "encode":
                        settings = _encoder_settings(src[1].codec_context)
                        astream = out.add_stream(AUDIO_ENCODER, rate=settings["rate"], layout=settings["layout"])
                        astream.format = settings["format"]
                    else:
                        log.warning("%s: audio not carried into %s: %s", audio_from, path.name, audio_note)
                for arr in _chain(first, it):
                    arr = _as_rgb_frame(arr)
                    if arr.shape[:2] != (h, w):
                        raise ValueError(f"frame {n} has size {arr.shape[1]}x{arr.shape[0]}, expected {w}x{h}")
                    if timeline is not None and n >= len(timeline):
                        raise ValueError(f"more frames than the timeline's {len(timeline)}")
                    frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
                    if vs.pix_fmt != "rgb24":
                        frame = frame.reformat(format=vs.pix_fmt)  # reformat drops pts: set it after
                    frame.pts = n if timeline is None else timeline.pts[n]
                    frame.time_base = time_base  # not vs.time_base: the muxer rewrites it
                    for pkt in vs.encode(frame):
                        out.mux(pkt)
                    n += 1
                for pkt in vs.encode(None):
                    out.mux(pkt)
                if timeline is not None and n != len(timeline):
                    raise ValueError(f"{n} frames for a timeline of {len(timeline)}")
                if astream is not None:
                    end = None if end_s is None else end_s - start_s
                    if plan == "copy":
                        _copy_audio(out, src, astream, src[2] + start_s, end)
                    else:
                        problem = _encode_audio(out, src, astream, src[2] + start_s, end)
                        if problem:
                            audio_note += f" (partial: {problem})"
                            log.warning("%s: %s", audio_from, problem)
            finally:
                out.close()
    finally:
        if src is not None:
            src[0].close()
    return WriteResult(str(path), n, w, h, (0, 0), fps, audio_note, vs.pix_fmt,
                       "constant" if timeline is None else "source")


def _chain(first, rest):
    yield first
    yield from rest
