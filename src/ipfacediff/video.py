"""Video I/O with PyAV: exact rational fps, every frame, rotation applied, audio stream-copied.

Conventions (the contract other modules rely on):
- Frames are uint8 RGB arrays (H, W, 3), rotation metadata already applied (display orientation).
- `fps` is a `fractions.Fraction` (25, 30000/1001 stay exact); frame i is shown at i / fps.
- `rotation` is the display-matrix angle in degrees counter-clockwise (PyAV/FFmpeg convention:
  a phone clip tagged "rotate=90" reads as -90); flips in the display matrix are not applied.
- Frame counts are decoded counts: containers that declare a different number are not trusted.
- `write_video` pads odd sizes to even (edge replication, right/bottom) because H.264 4:2:0 needs
  even sizes, records the true size in the container comment, and `read_video` crops it back.
"""

from __future__ import annotations

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

# Audio codecs FFmpeg's mp4/mov muxer accepts by stream copy; anything else is transcoded to AAC.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "opus", "flac", "alac"})
SIZE_TAG = re.compile(r"ipfacediff:size=(\d+)x(\d+)")
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv"}


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
    audio: str  # "none" | "copied <codec>" | "transcoded <codec> -> aac"


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
    return (int(round(degrees / 90.0)) * 90 + 179) % 360 - 179


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
    times, n, rotation, shape = [], 0, 0, None
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
                if frame.time is not None:
                    times.append(float(frame.time))
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
        n_frames_declared=declared, vfr=_is_vfr(times_a, fps),
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


def _pad_even(arr: np.ndarray, pad: tuple[int, int]) -> np.ndarray:
    if pad == (0, 0):
        return arr
    return np.pad(arr, ((0, pad[1]), (0, pad[0]), (0, 0)), mode="edge")


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


def _copy_audio(out, src, out_stream, t_shift: float, end_s: float | None) -> None:
    container, a, _ = src
    for pkt in container.demux(a):
        if pkt.dts is None or pkt.pts is None:
            continue
        t = float(pkt.pts * a.time_base) - t_shift
        if t < 0 or (end_s is not None and t >= end_s):
            continue
        shift = int(round(t_shift / a.time_base))
        pkt.pts, pkt.dts = pkt.pts - shift, pkt.dts - shift
        pkt.stream = out_stream
        out.mux(pkt)


def _transcode_audio(out, src, out_stream, t_shift: float, end_s: float | None) -> None:
    import av

    container, a, _ = src
    resampler = av.AudioResampler(format=out_stream.codec_context.format.name,
                                  layout=out_stream.codec_context.layout.name, rate=out_stream.codec_context.sample_rate)
    for frame in container.decode(a):
        t = float(frame.time) - t_shift if frame.time is not None else 0.0
        if t < 0 or (end_s is not None and t >= end_s):
            continue
        frame.pts = None
        for rf in resampler.resample(frame):
            for pkt in out_stream.encode(rf):
                out.mux(pkt)
    for rf in resampler.resample(None):
        for pkt in out_stream.encode(rf):
            out.mux(pkt)
    for pkt in out_stream.encode(None):
        out.mux(pkt)


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps,
    audio_from: str | Path | None = None,
    crf: int = 18,
    lossless: bool = False,
    preset: str = "medium",
    audio_range_s: tuple[float, float | None] | None = None,
) -> WriteResult:
    """Encode every frame at exactly `fps` (time base 1/fps), atomically.

    H.264 yuv420p (crf) by default; `lossless=True` writes libx264rgb at crf 0 (bit-exact RGB, odd
    sizes fine, but few players read it). Audio from `audio_from` is stream-copied, aligned to its
    first video frame, optionally restricted to `audio_range_s` = (start, end) seconds from that frame.
    """
    import av

    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(path, f"output must end in one of {', '.join(sorted(VIDEO_SUFFIXES))}")
    fps = as_fraction(fps)
    it = iter(frames)
    try:
        first = _as_rgb_frame(next(it))
    except StopIteration:
        raise InputError(path, "no frames to write") from None
    h, w = first.shape[:2]
    pad = (0, 0) if lossless else (w % 2, h % 2)
    src = _audio_source(audio_from)
    start_s, end_s = (audio_range_s or (0.0, None))
    audio_note, n = "none", 0
    try:
        with atomic_path(path) as tmp:
            out = av.open(str(tmp), mode="w", format="mp4" if path.suffix.lower() == ".mp4" else None)
            try:
                if pad != (0, 0):
                    out.metadata["comment"] = f"ipfacediff:size={w}x{h}"
                vs = out.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
                vs.width, vs.height = w + pad[0], h + pad[1]
                vs.pix_fmt = "rgb24" if lossless else "yuv420p"
                vs.time_base = Fraction(1) / fps
                vs.codec_context.time_base = Fraction(1) / fps
                vs.options = {"crf": "0" if lossless else str(int(crf)), "preset": preset}
                astream, copy = None, False
                if src is not None:
                    codec = src[1].codec_context.name
                    copy = codec in MP4_AUDIO_COPY or path.suffix.lower() == ".mkv"
                    if copy:
                        astream = out.add_stream_from_template(src[1])
                        audio_note = f"copied {codec}"
                    else:
                        astream = out.add_stream("aac", rate=src[1].codec_context.sample_rate or 48000)
                        audio_note = f"transcoded {codec} -> aac"
                        log.warning("%s: audio codec %s cannot go into %s; transcoding to AAC", audio_from, codec, path.suffix)
                for arr in _chain(first, it):
                    arr = _as_rgb_frame(arr)
                    if arr.shape[:2] != (h, w):
                        raise ValueError(f"frame {n} has size {arr.shape[1]}x{arr.shape[0]}, expected {w}x{h}")
                    frame = av.VideoFrame.from_ndarray(_pad_even(arr, pad), format="rgb24")
                    if not lossless:
                        frame = frame.reformat(format="yuv420p")  # reformat drops pts: set it after
                    frame.pts = n
                    frame.time_base = Fraction(1) / fps  # not vs.time_base: the muxer rewrites it
                    for pkt in vs.encode(frame):
                        out.mux(pkt)
                    n += 1
                for pkt in vs.encode(None):
                    out.mux(pkt)
                if astream is not None:
                    end = None if end_s is None else end_s - start_s
                    (_copy_audio if copy else _transcode_audio)(out, src, astream, src[2] + start_s, end)
            finally:
                out.close()
    finally:
        if src is not None:
            src[0].close()
    return WriteResult(str(path), n, w, h, pad, fps, audio_note)


def _chain(first, rest):
    yield first
    yield from rest
