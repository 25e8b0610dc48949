"""Keyframe sampling, eq. 4 blend weights, nearest-neighbour correspondences, propagation."""

from __future__ import annotations

import pytest
import torch

from ipfacediff.diffusion.propagation import (
    blend_plan,
    correspondences,
    gather_tokens,
    nearest_neighbours,
    propagate,
    sample_keyframes,
)


def test_keyframes_one_per_block_every_block_seeded():
    g = torch.Generator().manual_seed(3)
    kf = sample_keyframes(21, 8, g)  # blocks [0,8) [8,16) [16,21): last one short
    assert len(kf) == 3
    for b, k in enumerate(kf.tolist()):
        assert b * 8 <= k < min(21, (b + 1) * 8)
    assert torch.equal(kf, sample_keyframes(21, 8, torch.Generator().manual_seed(3)))
    draws = {tuple(sample_keyframes(64, 8, g).tolist()) for _ in range(5)}
    assert len(draws) > 1  # re-drawn each call (step)
    assert sample_keyframes(5, 8, g).tolist()[0] in range(5)  # video shorter than the interval


def test_keyframes_cover_short_last_block_uniformly():
    g = torch.Generator().manual_seed(0)
    seen = {int(sample_keyframes(17, 8, g)[-1]) for _ in range(50)}
    assert seen == {16}  # last block holds one frame only
    seen = {int(sample_keyframes(19, 8, g)[-1]) for _ in range(200)}
    assert seen == {16, 17, 18}


def test_blend_weights_follow_eq4_hand_computed():
    # keyframes 2, 7, 12; frames 0..13
    plan = blend_plan(torch.arange(14), torch.tensor([2, 7, 12]))
    expect = {  # frame: (prev kf position, next kf position, w_prev, w_next)
        0: (0, 0, 1.0, 0.0),  # before the first keyframe: that one alone
        1: (0, 0, 1.0, 0.0),
        2: (0, 0, 1.0, 0.0),  # a keyframe: itself
        3: (0, 1, 4 / 5, 1 / 5),  # d_prev 1, d_next 4: w_prev = d_next / (d_prev + d_next)
        4: (0, 1, 3 / 5, 2 / 5),
        5: (0, 1, 2 / 5, 3 / 5),
        6: (0, 1, 1 / 5, 4 / 5),
        7: (1, 1, 1.0, 0.0),
        9: (1, 2, 3 / 5, 2 / 5),
        12: (2, 2, 1.0, 0.0),
        13: (2, 2, 1.0, 0.0),  # after the last keyframe
    }
    for f, (p, n, wp, wn) in expect.items():
        assert (int(plan.prev[f]), int(plan.next[f])) == (p, n), f
        assert float(plan.w_prev[f]) == pytest.approx(wp, abs=1e-12), f
        assert float(plan.w_next[f]) == pytest.approx(wn, abs=1e-12), f
    assert torch.allclose(plan.w_prev + plan.w_next, torch.ones(14, dtype=torch.float64))


def test_blend_plan_rejects_bad_keyframes():
    with pytest.raises(ValueError):
        blend_plan(torch.arange(4), torch.tensor([3, 1]))
    with pytest.raises(ValueError):
        blend_plan(torch.arange(4), torch.tensor([], dtype=torch.long))


def test_nearest_neighbours_match_float64_bruteforce_chunked_or_not():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 37, 16, generator=g), torch.randn(3, 37, 16, generator=g) * 5
    qn = q.double() / q.double().norm(dim=-1, keepdim=True)
    kn = k.double() / k.double().norm(dim=-1, keepdim=True)
    ref = torch.einsum("bsd,btd->bst", qn, kn).argmax(-1)
    assert torch.equal(nearest_neighbours(q, k, chunk=4096), ref)
    assert torch.equal(nearest_neighbours(q, k, chunk=5), ref)
    # cosine, not dot product: scaling a key token does not change the match
    k2 = k.clone()
    k2[:, 0] *= 100
    assert torch.equal(nearest_neighbours(q, k2), ref)


def test_propagate_matches_naive_eq4_loop():
    g = torch.Generator().manual_seed(1)
    G, K, S, D = 2, 3, 10, 4
    values = torch.randn(G, K, S, D, generator=g, dtype=torch.float64)
    keyframes = torch.tensor([1, 5, 9])
    frames = torch.tensor([0, 2, 3, 4, 6, 8, 10])
    plan = blend_plan(frames, keyframes)
    idx_p = torch.randint(S, (len(frames), S), generator=g)
    idx_n = torch.randint(S, (len(frames), S), generator=g)
    out = propagate(values, plan, idx_p, idx_n)
    for gi in range(G):
        for b, f in enumerate(frames.tolist()):
            prev = max([k for k in keyframes.tolist() if k <= f], default=None)
            nxt = min([k for k in keyframes.tolist() if k >= f], default=None)
            prev, nxt = prev if prev is not None else nxt, nxt if nxt is not None else prev
            dp, dn = f - prev, nxt - f
            wp, wn = (1.0, 0.0) if prev == nxt else (dn / (dp + dn), dp / (dp + dn))
            pp, pn = keyframes.tolist().index(prev), keyframes.tolist().index(nxt)
            for s in range(S):
                ref = wp * values[gi, pp, idx_p[b, s]] + (wn * values[gi, pn, idx_n[b, s]] if wn else 0)
                assert torch.allclose(out[gi, b, s], ref, atol=1e-12)


def test_keyframe_maps_to_itself_exactly_even_with_duplicate_features():
    g = torch.Generator().manual_seed(2)
    K, S, D = 2, 12, 6
    feats = torch.randn(K, S, D, generator=g)
    feats[:, 5] = feats[:, 3]  # duplicate tokens: nearest neighbour of token 5 could be 3
    keyframes = torch.tensor([0, 4])
    plan = blend_plan(torch.tensor([0, 4]), keyframes)
    idx_p, idx_n = correspondences(feats, feats, plan, keyframes)
    assert torch.equal(idx_p, torch.arange(S).expand(2, S))
    assert torch.equal(idx_n, torch.arange(S).expand(2, S))
    values = torch.randn(1, K, S, D, generator=g)
    assert torch.equal(propagate(values, plan, idx_p, idx_n), values)  # bit-exact, weight 1


def test_identical_frames_propagate_to_identical_outputs():
    g = torch.Generator().manual_seed(3)
    S, D = 16, 8
    frame_feat = torch.randn(S, D, generator=g)
    keyframes = torch.tensor([1, 6])
    kf_feats = frame_feat.expand(2, S, D)
    kf_vals = torch.randn(1, 1, S, D, generator=g).expand(1, 2, S, D)  # identical keyframe outputs
    frames = torch.tensor([0, 2, 3, 4, 5, 7])
    plan = blend_plan(frames, keyframes)
    idx_p, idx_n = correspondences(frame_feat.expand(len(frames), S, D), kf_feats, plan, keyframes)
    out = propagate(kf_vals, plan, idx_p, idx_n)
    for b in range(len(frames)):
        assert torch.allclose(out[0, b], kf_vals[0, 0], atol=1e-6)


def test_gather_tokens_indexing():
    values = torch.arange(2 * 3 * 4).float().view(1, 2, 3, 4).expand(2, 2, 3, 4)
    out = gather_tokens(values, torch.tensor([1, 0]), torch.tensor([[2, 2, 0], [1, 0, 1]]))
    assert torch.equal(out[1, 0, 0], values[1, 1, 2]) and torch.equal(out[0, 1, 2], values[0, 0, 1])
