"""The meta-device rehearsal (diffusion/rehearsal.py) against real CPU runs of the tiny models."""

from __future__ import annotations

import gc

import pytest
import torch

from ipfacediff.diffusion import models as M
from ipfacediff.diffusion import rehearsal as R
from ipfacediff.diffusion.branches import BranchSet
from ipfacediff.diffusion.pipeline import EditConfig, InvertedVideo
from ipfacediff.diffusion.timing import synthetic_frames


def test_live_bytes_counts_allocations_and_frees_in_512_byte_blocks():
    tr = R.LiveBytes("cpu")
    with tr:
        a = torch.ones(1000)  # 4000 bytes -> 8 blocks
        b = a * 2
        view = b[10:]  # same storage: not counted again
        assert tr.live == 2 * 4096
        del a
        gc.collect()
        assert tr.live == 4096
        c = torch.ones(10)  # 40 bytes -> one block
        assert tr.peak == 2 * 4096 and tr.live == 4096 + 512
    del b, view, c
    assert tr.live == 0


def test_live_bytes_ignores_weights_and_host_copies_of_meta_tensors():
    w = torch.empty(100, 100, device="meta")
    tr = R.LiveBytes("meta", ignore=[w])
    with tr:
        y = w @ torch.empty(100, 10, device="meta")
        host = y.cpu()  # zeros of the right shape on the host, not device memory
    assert host.device.type == "cpu" and host.shape == (100, 10) and not host.any()
    assert tr.peak == 2 * R.block_bytes(100 * 10 * 4)  # the operand and the product, never the weight


def test_shape_only_inversion_is_an_inverted_video():
    inv = R.ShapeOnlyInversion(30, [981, 500, 1], (4, 8, 8), "meta", prompt="p")
    assert isinstance(inv, InvertedVideo)
    assert inv.latents(0).shape == (30, 4, 8, 8) and inv.latents(3, [1, 5]).shape == (2, 4, 8, 8)
    assert inv.latents(1, slice(28, 40)).shape == (2, 4, 8, 8)
    with pytest.raises(IndexError):
        inv.latents(4)


# 6 frames, 3 keyframes in groups of 1 (the 2nd and 3rd carry a keyframe: one call shape, replayed), 1 anchor; 2 steps
BOUNDED = dict(keyframe_interval=2, keyframe_attention="bounded", keyframe_group_size=1, keyframe_anchors=1)


@pytest.mark.slow
@pytest.mark.parametrize("attention,n,steps", [({}, 10, 3), (BOUNDED, 6, 2)], ids=["exact", "bounded"])
def test_rehearsal_matches_a_real_cpu_run(tmp_path, attention, n, steps):
    """Same code path, same seed: the meta rehearsal (repeated call shapes replayed) books the same
    FLOPs per phase as the real run, exactly (the same ops on the same shapes), and the same peak
    live bytes except for tensors on the host: the real CPU run counts them (its device IS the host),
    the meta run does not, so the rehearsal is never above the real run and below it by at most what
    the host holds at a peak: one batch of uint8 frames (the inversion's input batch, the decoder's
    output batch) and bookkeeping tensors (blend plans, keyframe indices, timesteps, scalars: each one
    512-byte block, a dozen or so live; 64 of them = 32 KiB bounds them)."""
    size, invert_batch = 64, 4
    cfg = EditConfig(steps=steps, batch_size=2, methods=["ours"], **attention)  # batches of 2: repeated call shapes
    M.build_tiny(tmp_path / "base", seed=0, sample_size=size)
    comps = M.load_components(tmp_path / "base", "cpu", torch.float32)
    real = R.measure_real(comps, BranchSet(base=comps.unet), synthetic_frames(n, size), cfg, steps, steps,
                          invert_batch_size=invert_batch, work_dir=tmp_path)
    meta = R.rehearse(R.meta_components("tiny", torch.float32, size), n, cfg, steps, steps, invert_batch_size=invert_batch, size=size)
    assert sum(meta["replayed"].values()) >= 3  # the replay path was exercised
    assert real["pair_calls"] == meta["pair_calls"]
    assert real["flops"] == meta["flops"]
    assert real["flops"]["keyframe_pass"] > 0 and real["flops"]["propagation_pass"] > 0
    assert (real["flops"].get("anchor_pass", 0) > 0) == bool(attention)
    host_bound = R.block_bytes(max(invert_batch, cfg.batch_size) * size * size * 3) + 32 * 1024
    for phase, real_peak in real["peak_bytes"].items():
        assert 0 <= real_peak - meta["peak_bytes"][phase] <= host_bound, (phase, meta["peak_bytes"][phase], real_peak)
