"""Same edit twice in ONE process, same seed: bit-identical results (batch mode and the web app run
many edits per process).

Bisection of the reported in-process difference (max 22-24 px between two CLI edits): the engine is
deterministic (latents, decoded crops, pasted frames all bit-equal between the calls); the bytes
differ only in the H.264 encoding of identical frames, which depends on the process's heap state
(see test_encoding_is_independent_of_heap_state)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline import PROMPT, moving_blob  # noqa: E402

pytestmark = pytest.mark.slow


def test_pipeline_same_edit_twice_in_one_process_is_bit_identical(tiny_models, tmp_path):
    from ipfacediff.diffusion.branches import BranchSet
    from ipfacediff.diffusion.inversion import InversionCache, invert_video
    from ipfacediff.diffusion.models import load_components
    from ipfacediff.diffusion.pipeline import EditConfig, IPFaceDiffPipeline

    comps = load_components(tiny_models, dtype="float32")
    cache = InversionCache(invert_video(comps, BranchSet(base=comps.unet), moving_blob(6), tmp_path / "c.safetensors",
                                        "a photo of a person", steps=2, progress=False))
    pipe = IPFaceDiffPipeline(comps, None, EditConfig(steps=2, keyframe_interval=4, batch_size=4), progress=False)
    a, b = (pipe(PROMPT, cache, generator=torch.Generator().manual_seed(0)) for _ in range(2))
    assert a.info["keyframes"] == b.info["keyframes"]
    assert torch.equal(a.latents, b.latents)  # exact: same inputs, same kernels, same batch shapes
    assert np.array_equal(a.frames, b.frames)


def _dirty_heap() -> None:
    """Allocate and free FFmpeg frame buffers full of noise: what earlier edits leave behind."""
    import av

    rng = np.random.default_rng(0)
    junk = [av.VideoFrame.from_ndarray(rng.integers(0, 255, (288, 360, 3), np.uint8), format="rgb24").reformat(format="yuv420p")
            for _ in range(200)]
    del junk


@pytest.mark.xfail(strict=True, reason="KNOWN BUG (open): libx264 via PyAV encodes identical frames to different "
                                      "bytes once the heap is dirty (uninitialised memory read); root cause not fixed yet")
def test_encoding_is_independent_of_heap_state(tmp_path):
    from ipfacediff.video import write_video

    yy, xx = np.mgrid[:288, :360].astype(np.float32)
    frames = [np.clip(np.stack([xx * 0.7 + 9 * i, yy * 0.8, 255 - xx * 0.5 + 5 * np.sin(yy / (7 + i))], -1), 0, 255).astype(np.uint8)
              for i in range(5)]

    def digest(name: str) -> str:
        write_video(tmp_path / name, frames, 25)
        return hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()

    first = digest("a.mp4")
    seen = set()
    for k in range(3):
        _dirty_heap()
        seen.add(digest(f"b{k}.mp4"))
    assert seen == {first}
