"""Measuring for paper Table 2: wall time and peak memory of a block, the hardware, the workload clips.

`measure` gives wall seconds and peak memory: CUDA (`torch.cuda.max_memory_allocated`) on a GPU,
process RSS sampled by a background thread on the CPU (peak above the RSS before the block, and
absolute). The rows themselves (a loaded `Engine` inverting and editing clips of each length) are
made by `ipfacediff.editing.timing`, which the `timing` stage and benchmarks/edit_speed.py call.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

MB = 1024 * 1024


# --------------------------------------------------------------------------- measuring


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@dataclass
class Measure:
    seconds: float = 0.0
    peak_mb: float = 0.0  # peak above the level before the block (what the block itself needed)
    peak_abs_mb: float = 0.0  # absolute peak (process RSS, or all CUDA allocations)
    kind: str = "cpu_rss"


@contextlib.contextmanager
def measure(device: torch.device, interval_s: float = 0.005) -> Iterator[Measure]:
    """Wall time and peak memory of the block (CUDA allocator on a GPU, sampled RSS on the CPU)."""
    m = Measure()
    if device.type == "cuda":
        m.kind = "cuda_max_memory_allocated"
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        yield m
        torch.cuda.synchronize(device)
        m.seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(device)
        m.peak_mb, m.peak_abs_mb = (peak - base) / MB, peak / MB
        return
    base = rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:  # torch releases the GIL in its kernels, so this thread keeps sampling
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.seconds = time.perf_counter() - t0
        stop.set()
        thread.join()
        peak[0] = max(peak[0], rss_bytes())
        m.peak_mb, m.peak_abs_mb = (peak[0] - base) / MB, peak[0] / MB


def hardware_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews CPU timings
        "torch": torch.__version__,
        "device": str(device),
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1024**3, 1), cuda=torch.version.cuda)
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- workload


def extend_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """`n` frames from a clip played forwards then backwards (ping-pong: no jump cut), repeated."""
    if len(frames) == 0:
        raise ValueError("no frames to extend")
    cycle = np.concatenate([np.arange(len(frames)), np.arange(len(frames) - 2, 0, -1)]) if len(frames) > 1 else np.zeros(1, int)
    return frames[cycle[np.arange(n) % len(cycle)]]


def synthetic_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth moving colour fields (deterministic); compute time does not depend on content."""
    g = np.random.default_rng(seed)
    base = g.uniform(0, 255, (4, 4, 3))
    import cv2

    big = cv2.resize(base.astype(np.float32), (size * 2, size * 2), interpolation=cv2.INTER_CUBIC)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        off = int(size * 0.5 * (1 + np.sin(i / 8.0)))
        out[i] = np.clip(big[off : off + size, off : off + size], 0, 255).astype(np.uint8)
    return out
