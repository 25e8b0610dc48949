"""Synthetic in-the-wild clips written directly with PyAV (independent of ipfacediff.video):
webcam AVI (MJPEG + 8-bit unsigned PCM mono 11025 Hz), variable frame rate with a click track,
odd sizes, rotation, faces pasted from stills."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def marker_frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    w, h = size
    """A white marker in the top-left corner, a per-frame green level in the bottom half."""
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[: max(1, h // 4), : max(1, w // 4)] = 255
        img[h // 2:, :, 1] = (20 * i) % 256
        out.append(img)
    return out


def write_clip(path: Path, frames: list[np.ndarray], pts: list[int] | None = None, time_base: Fraction = Fraction(1, 15),
               codec: str = "libx264", pix_fmt: str = "yuv420p", fmt: str | None = None, rotation: int | None = None,
               audio: np.ndarray | None = None, audio_rate: int = 11025, audio_codec: str = "pcm_u8",
               audio_start_s: float = 0.0) -> Path:
    """Encode `frames` (RGB uint8) at `pts` x `time_base` (default i), with optional mono `audio`
    (float in [-1, 1]) starting `audio_start_s` after the first frame."""
    pts = list(range(len(frames))) if pts is None else pts
    c = av.open(str(path), "w", format=fmt)
    v = c.add_stream(codec, rate=Fraction(1) / time_base)
    h, w = frames[0].shape[:2]
    v.width, v.height, v.pix_fmt = w, h, pix_fmt
    v.time_base = v.codec_context.time_base = time_base
    if rotation is not None:
        v.set_display_rotation(rotation)
    a = None
    if audio is not None:
        a = c.add_stream(audio_codec, rate=audio_rate)
        a.layout = "mono"
    for img, p in zip(frames, pts):
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
        f.pts, f.time_base = p, time_base
        for pkt in v.encode(f):
            c.mux(pkt)
    for pkt in v.encode():
        c.mux(pkt)
    if a is not None:
        fmt_name = a.codec_context.format.name
        if fmt_name.startswith("u8"):
            samples = np.clip(np.rint(audio * 127 + 128), 0, 255).astype(np.uint8)
        elif fmt_name.startswith("s16"):
            samples = np.clip(np.rint(audio * 32767), -32768, 32767).astype(np.int16)
        else:
            samples = audio.astype(np.float32)
        offset = round(audio_start_s * audio_rate)
        step = a.codec_context.frame_size or 1024
        for k in range(0, len(samples), step):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, k:k + step]), format=fmt_name, layout="mono")
            af.sample_rate, af.pts, af.time_base = audio_rate, offset + k, Fraction(1, audio_rate)
            for pkt in a.encode(af):
                c.mux(pkt)
        for pkt in a.encode():
            c.mux(pkt)
    c.close()
    return path


def tone(seconds: float, rate: int = 11025, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


def webcam_avi(path: Path, n: int = 8, size: tuple[int, int] = (64, 48), frames: list[np.ndarray] | None = None) -> Path:
    """MJPEG video at 15 fps + 8-bit unsigned PCM mono 11025 Hz in an AVI, like a cheap webcam."""
    frames = frames or marker_frames(n, size)
    return write_clip(path, frames, codec="mjpeg", pix_fmt="yuvj420p", fmt="avi", audio=tone(len(frames) / 15))


VFR_PTS = [0, 1, 2, 3, 5, 7, 9, 11]  # 1/15 s apart, then 2/15 s apart
FLASH = 5  # index of the white frame; the click sounds at its timestamp


def vfr_click_clip(path: Path, size: tuple[int, int] = (64, 48), rate: int = 16000, fmt: str = "mov",
                   audio_codec: str = "pcm_s16le") -> Path:
    """VFR clip (VFR_PTS x 1/15 s): frame FLASH is white, the others black; the audio is silent but
    for a 5 ms click at frame FLASH's time."""
    w, h = size
    frames = [np.full((h, w, 3), 255 if i == FLASH else 0, np.uint8) for i in range(len(VFR_PTS))]
    audio = np.zeros(round((VFR_PTS[-1] + 2) / 15 * rate))
    t = round(VFR_PTS[FLASH] / 15 * rate)
    audio[t:t + rate // 200] = 0.8
    return write_clip(path, frames, VFR_PTS, Fraction(1, 15), fmt=fmt, audio=audio, audio_rate=rate, audio_codec=audio_codec)
