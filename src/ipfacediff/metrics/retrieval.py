"""Identity maths on L2-normalised embeddings: video embeddings, cosine distance, retrieval ranks,
R@k, MRR, and STIT's TL-ID / TG-ID.

Conventions (stated once, used everywhere):
- Video embedding: mean of the unit frame embeddings of the frames with a face, re-normalised to
  unit length (the paper: "mean of frame embeddings"; re-normalising makes the cosine a dot product).
- Cosine distance = 1 - cos(original video embedding, edited video embedding); lower is better.
- Retrieval: the edited video's embedding queries a gallery that holds the original; the gallery is
  ranked by cosine similarity. Ties are pessimistic: rank = 1 + number of OTHER gallery entries
  whose similarity is >= the original's, so a tie never counts as a hit.
- R@k = fraction of queries with rank <= k; MRR = mean of 1 / rank.
"""

from __future__ import annotations

import numpy as np


def normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def video_embedding(frame_embeddings: np.ndarray) -> np.ndarray:
    """Unit mean of unit frame embeddings (rows with NaN, i.e. frames without a face, are skipped)."""
    e = np.asarray(frame_embeddings, dtype=np.float64)
    e = e[~np.isnan(e).any(axis=1)]
    if len(e) == 0:
        raise ValueError("no frame embeddings (no face in any frame)")
    return normalize(e.mean(axis=0))


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity of two vectors (float64; 0 for identical directions)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def retrieval_ranks(queries: np.ndarray, gallery: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of gallery row targets[q] for each query row q (pessimistic ties).

    One (Q, G) matrix product; the target's similarity comes from the same product, so an entry is
    never compared against a differently-rounded copy of itself.
    """
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    gallery = np.asarray(gallery, np.float32)
    targets = np.asarray(targets, np.int64).reshape(-1)
    if len(gallery) == 0:
        raise ValueError("empty gallery")
    if len(targets) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(targets)} targets")
    if targets.min() < 0 or targets.max() >= len(gallery):
        raise ValueError("target index outside the gallery")
    sims = (gallery @ queries.T).T  # (G, D) @ (D, Q): about 2x faster than queries @ gallery.T for big G
    target_sim = sims[np.arange(len(queries)), targets]
    # counts the target itself once (sim >= itself) plus every other entry tying or beating it
    return (sims >= target_sim[:, None]).sum(axis=1).astype(np.int64)


def recall_at_k(ranks: np.ndarray, k: int = 1) -> float:
    ranks = np.asarray(ranks)
    return float(np.mean(ranks <= k)) if len(ranks) else float("nan")


def mean_reciprocal_rank(ranks: np.ndarray) -> float:
    ranks = np.asarray(ranks, np.float64)
    return float(np.mean(1.0 / ranks)) if len(ranks) else float("nan")


def relative_identity_consistency(source: np.ndarray, edit: np.ndarray) -> dict[str, float]:
    """STIT's TL-ID and TG-ID on paired unit frame embeddings (row t of each is the same instant).

    R = (E E^T) / (S S^T) element-wise: how similar two frames of the edit are relative to the
    same two frames of the source. TL-ID = mean of R over adjacent pairs (t, t+1); TG-ID = mean of R
    over all pairs t != t'. 1 = as consistent as the source; below 1 = identity flickers/drifts.
    """
    s, e = np.asarray(source, np.float64), np.asarray(edit, np.float64)
    if s.shape != e.shape:
        raise ValueError(f"source {s.shape} and edit {e.shape} must be paired frame by frame")
    n = len(s)
    if n < 2:
        return {"tl_id": float("nan"), "tg_id": float("nan")}
    rel = (e @ e.T) / (s @ s.T)
    off = ~np.eye(n, dtype=bool)
    return {"tl_id": float(np.mean(np.diag(rel, k=1))), "tg_id": float(np.mean(rel[off]))}
