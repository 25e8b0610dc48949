"""Paste an edited crop back into its frame through the inverse affine and a soft mask."""

from __future__ import annotations

import math

import numpy as np

from .align import invert_affine, transform_points


def _footprint(M: np.ndarray, crop_size: int, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Frame-pixel box (x0, y0, x1, y1) that the crop covers, clipped to the frame."""
    s = crop_size - 1.0
    pts = transform_points(np.array([[0, 0], [s, 0], [s, s], [0, s]]), invert_affine(M))
    x0, y0 = (max(0, math.floor(v) - 1) for v in pts.min(0))
    x1, y1 = min(shape[1], math.ceil(pts[:, 0].max()) + 2), min(shape[0], math.ceil(pts[:, 1].max()) + 2)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def paste_back(frame: np.ndarray, edited_crop: np.ndarray, M: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """New frame = frame * (1 - a) + warp(edited_crop) * a with a = warp(mask), bilinear, where
    warp maps crop -> frame by the inverse of M (frame -> crop). Pixels where a == 0 are returned
    bit-exact; only the crop's footprint is warped (cheap on large frames).
    """
    import cv2

    out = np.array(frame, copy=True)
    size = edited_crop.shape[0]
    box = _footprint(M, size, frame.shape[:2])
    if box is None:
        return out
    x0, y0, x1, y1 = box
    M_roi = np.asarray(M, np.float64).copy()
    M_roi[:, 2] += M_roi[:, :2] @ np.array([x0, y0], np.float64)  # ROI pixel (u, v) = frame (u+x0, v+y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    dsize = (x1 - x0, y1 - y0)
    a = cv2.warpAffine(mask.astype(np.float32), M_roi, dsize, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    fg = cv2.warpAffine(edited_crop.astype(np.float32), M_roi, dsize, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    if fg.ndim == 2:
        fg = fg[:, :, None]
    roi = out[y0:y1, x0:x1].astype(np.float32)
    a = a[:, :, None] if roi.ndim == 3 else a
    blended = roi + a * (fg.reshape(roi.shape) - roi)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(frame.dtype)
    return out
