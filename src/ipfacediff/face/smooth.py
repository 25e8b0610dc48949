"""Temporal smoothing of crop transforms (STIT-style): Gaussian over time on the crop's centre
(frame pixels), log scale and rotation, then rebuilt into similarity affines.

A similarity frame -> crop affine M = [s R | t] is described by (cx, cy, log s, theta), where
(cx, cy) is the frame point that lands on the crop centre.
"""

from __future__ import annotations

import numpy as np


def _centre(crop_size: int) -> np.ndarray:
    return np.full(2, (crop_size - 1) / 2.0)


def transforms_to_params(M: np.ndarray, crop_size: int) -> np.ndarray:
    """(N, 2, 3) similarity affines -> (N, 4) [cx, cy, log_s, theta]."""
    M = np.asarray(M, np.float64).reshape(-1, 2, 3)
    a, b = M[:, 0, 0], M[:, 1, 0]
    s, theta = np.hypot(a, b), np.arctan2(b, a)
    A_inv = np.linalg.inv(M[:, :, :2])
    centre = np.einsum("nij,nj->ni", A_inv, _centre(crop_size)[None] - M[:, :, 2])
    return np.column_stack([centre, np.log(s), theta])


def params_to_transforms(params: np.ndarray, crop_size: int) -> np.ndarray:
    """(N, 4) [cx, cy, log_s, theta] -> (N, 2, 3) affines (inverse of transforms_to_params)."""
    p = np.asarray(params, np.float64).reshape(-1, 4)
    s, th = np.exp(p[:, 2]), p[:, 3]
    A = np.stack([np.stack([s * np.cos(th), -s * np.sin(th)], -1), np.stack([s * np.sin(th), s * np.cos(th)], -1)], 1)
    t = _centre(crop_size)[None] - np.einsum("nij,nj->ni", A, p[:, :2])
    return np.concatenate([A, t[:, :, None]], axis=2)


def fill_missing(params: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over time for invalid rows; ends hold the nearest valid value."""
    params, valid = np.asarray(params, np.float64), np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("no valid rows to interpolate from")
    t = np.arange(len(params))
    out = params.copy()
    out[:, 3] = np.where(valid, out[:, 3], 0.0)
    out[valid, 3] = np.unwrap(out[valid, 3])
    for j in range(params.shape[1]):
        out[:, j] = np.interp(t, t[valid], out[valid, j])
    return out


def gaussian_smooth(params: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along time (edges: nearest), rotation unwrapped first. sigma <= 0: unchanged."""
    from scipy.ndimage import gaussian_filter1d

    p = np.asarray(params, np.float64).copy()
    if sigma <= 0 or len(p) < 2:
        return p
    p[:, 3] = np.unwrap(p[:, 3])
    return gaussian_filter1d(p, sigma=float(sigma), axis=0, mode="nearest")


def crop_corners(M: np.ndarray, crop_size: int) -> np.ndarray:
    """(N, 4, 2) frame positions of the crop's four corners."""
    M = np.asarray(M, np.float64).reshape(-1, 2, 3)
    s = crop_size - 1.0
    corners = np.array([[0, 0], [s, 0], [s, s], [0, s]], np.float64)
    A_inv = np.linalg.inv(M[:, :, :2])
    return np.einsum("nij,nkj->nki", A_inv, corners[None] - M[:, None, :, 2])


def jitter(M: np.ndarray, crop_size: int) -> float:
    """Mean |second temporal difference| of the crop corners, frame pixels: shake, not steady motion."""
    c = crop_corners(M, crop_size)
    if len(c) < 3:
        return 0.0
    acc = c[2:] - 2 * c[1:-1] + c[:-2]
    return float(np.linalg.norm(acc, axis=-1).mean())
