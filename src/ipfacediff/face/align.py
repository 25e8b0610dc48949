"""5-point similarity alignment to the ArcFace template, and affine crops.

All transforms are (2, 3) float64 affines mapping frame pixels -> crop pixels (OpenCV convention:
pixel centres at integer coordinates).
"""

from __future__ import annotations

import math

import numpy as np

# insightface's arcface_dst for 112x112 crops: left eye, right eye, nose, left mouth, right mouth.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def template(crop_size: int, scale: float = 1.0) -> np.ndarray:
    """ArcFace template scaled to `crop_size`; `scale` > 1 zooms out around the crop centre."""
    c = crop_size / 2.0
    return c + (ARCFACE_112 * (crop_size / 112.0) - c) / scale


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst (Umeyama 1991)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # reflection: flip the weakest axis
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var_s = (xs**2).sum() / len(src)
    s = float((d * sign).sum() / var_s) if var_s > 0 else 1.0
    t = mu_d - s * rot @ mu_s
    return np.hstack([s * rot, t[:, None]])


def align_transform(landmarks5: np.ndarray, crop_size: int, scale: float = 1.0) -> np.ndarray:
    """(2, 3) affine frame -> crop putting the 5 landmarks on the scaled ArcFace template."""
    lm = np.asarray(landmarks5, np.float64).reshape(5, 2)
    return umeyama(lm, template(crop_size, scale))


def transform_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    return pts @ M[:, :2].T + M[:, 2]


def invert_affine(M: np.ndarray) -> np.ndarray:
    A = np.linalg.inv(M[:, :2])
    return np.hstack([A, -A @ M[:, 2:3]])


def transform_scale(M: np.ndarray) -> float:
    """Frame -> crop scale factor of a similarity transform."""
    return float(math.sqrt(abs(np.linalg.det(M[:, :2]))))


def crop(frame: np.ndarray, M: np.ndarray, size: int, antialias: bool = True) -> np.ndarray:
    """Warp `frame` into a `size` x `size` crop with M (frame -> crop), edge pixels replicated.

    When the crop shrinks the face (scale < 1) the warp runs at an integer multiple of `size`
    and is area-averaged down, so small crops of large faces are not aliased.
    """
    import cv2

    k = max(1, math.ceil(1.0 / transform_scale(M) - 1e-6)) if antialias else 1
    big = np.vstack([M * k, [0, 0, 1]])[:2] if k > 1 else M
    if k > 1:  # crop pixel centres: x_k = k * x + (k - 1) / 2
        big = big.copy()
        big[:, 2] += (k - 1) / 2.0
    out = cv2.warpAffine(frame, big, (size * k, size * k), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if k > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out
