"""Retrieval and identity maths against hand-computed examples and float64 naive references."""

from __future__ import annotations

import numpy as np
import pytest

from ipfacediff.metrics.retrieval import (
    cosine_distance,
    mean_reciprocal_rank,
    normalize,
    recall_at_k,
    relative_identity_consistency,
    retrieval_ranks,
    video_embedding,
)


def _unit(deg: float) -> np.ndarray:
    return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))], np.float32)


def test_ranks_mrr_recall_hand_computed():
    # gallery directions 0, 30, 60, 90 degrees; query at 20 degrees ranks 30 (10 deg) > 0 (20) > 60 (40) > 90 (70)
    gallery = np.stack([_unit(0), _unit(30), _unit(60), _unit(90)])
    queries = np.stack([_unit(20), _unit(20), _unit(20), _unit(80)])
    targets = np.array([1, 0, 3, 2])  # expected ranks 1, 2, 4, 2
    ranks = retrieval_ranks(queries, gallery, targets)
    assert ranks.tolist() == [1, 2, 4, 2]
    assert recall_at_k(ranks, 1) == pytest.approx(0.25)
    assert recall_at_k(ranks, 2) == pytest.approx(0.75)
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 2) / 4)


def test_ties_are_pessimistic():
    # query at 45 degrees is exactly as close to 0 and 90: whichever is the target ranks 2
    gallery = np.stack([_unit(0), _unit(90), _unit(180)]).astype(np.float32)
    q = np.array([[np.sqrt(0.5), np.sqrt(0.5)]], np.float32)
    assert retrieval_ranks(q, gallery, [0]).tolist() == [2]
    assert retrieval_ranks(q, gallery, [1]).tolist() == [2]
    # an exact duplicate of the target in the gallery also ties it: rank 2, never 1
    dup = np.stack([_unit(10), _unit(10), _unit(100)])
    assert retrieval_ranks(_unit(10)[None], dup, [0]).tolist() == [2]


def _naive_ranks(q: np.ndarray, g: np.ndarray, t: np.ndarray) -> list[int]:
    out = []
    for qi, ti in zip(q.astype(np.float64), t):
        sims = [float(np.dot(qi, gj)) for gj in g.astype(np.float64)]
        out.append(1 + sum(1 for j, s in enumerate(sims) if j != ti and s >= sims[ti]))
    return out


def test_ranks_match_naive_float64_reference():
    rng = np.random.default_rng(0)
    g = normalize(rng.standard_normal((300, 16)))
    t = rng.integers(0, 300, 40)
    q = normalize(g[t] + 0.5 * rng.standard_normal((40, 16)))  # noisy: ranks spread over 1..many
    ranks = retrieval_ranks(q, g, t)
    assert ranks.tolist() == _naive_ranks(q, g, t)
    assert ranks.max() > 10 and ranks.min() == 1


@pytest.mark.parametrize("gallery_size", [1, 2, 50, 2000])
def test_identical_video_is_distance_0_and_rank_1_with_any_gallery(gallery_size):
    rng = np.random.default_rng(gallery_size)
    frames = normalize(rng.standard_normal((12, 128)))
    v_orig, v_edit = video_embedding(frames), video_embedding(frames.copy())
    assert cosine_distance(v_orig, v_edit) == pytest.approx(0.0, abs=1e-6)
    gallery = np.vstack([normalize(rng.standard_normal((gallery_size - 1, 128))), v_orig[None]])
    ranks = retrieval_ranks(v_edit[None], gallery, [gallery_size - 1])
    assert recall_at_k(ranks, 1) == 1.0 and mean_reciprocal_rank(ranks) == 1.0


def test_video_embedding_is_unit_mean_and_skips_faceless_rows():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])
    v = video_embedding(e)
    assert np.allclose(v, [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-7)
    with pytest.raises(ValueError):
        video_embedding(np.full((3, 2), np.nan))


def test_cosine_distance_reference():
    a, b = np.array([1.0, 2.0, 2.0]), np.array([2.0, 0.0, 1.0])
    assert cosine_distance(a, b) == pytest.approx(1 - 4 / (3 * np.sqrt(5)), abs=1e-12)
    assert cosine_distance(a, -a) == pytest.approx(2.0)


def test_tl_tg_id_match_naive_loops():
    rng = np.random.default_rng(3)
    s = normalize(rng.standard_normal((7, 8)) + 3).astype(np.float64)  # correlated, like frames of one face
    e = normalize(s + 0.3 * rng.standard_normal((7, 8))).astype(np.float64)
    got = relative_identity_consistency(s, e)
    tl = np.mean([(e[t] @ e[t + 1]) / (s[t] @ s[t + 1]) for t in range(6)])
    tg = np.mean([(e[i] @ e[j]) / (s[i] @ s[j]) for i in range(7) for j in range(7) if i != j])
    assert got["tl_id"] == pytest.approx(tl, abs=1e-9) and got["tg_id"] == pytest.approx(tg, abs=1e-9)
    same = relative_identity_consistency(s, s)
    assert same["tl_id"] == pytest.approx(1.0) and same["tg_id"] == pytest.approx(1.0)
    assert np.isnan(relative_identity_consistency(s[:1], e[:1])["tl_id"])


def test_retrieval_bad_input():
    with pytest.raises(ValueError, match="empty gallery"):
        retrieval_ranks(np.ones((1, 4)), np.zeros((0, 4)), [0])
    with pytest.raises(ValueError, match="outside the gallery"):
        retrieval_ranks(np.ones((1, 4)), np.ones((2, 4)), [2])
    with pytest.raises(ValueError, match="targets"):
        retrieval_ranks(np.ones((2, 4)), np.ones((2, 4)), [0])
