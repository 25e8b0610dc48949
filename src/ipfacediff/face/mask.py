"""Feathered face mask in crop coordinates: an ellipse over the face, zero on the crop border."""

from __future__ import annotations

import numpy as np

from .align import template


def face_ellipse(landmarks: np.ndarray) -> tuple[np.ndarray, tuple[float, float], float]:
    """(centre, (half-width, half-height), angle in degrees) of the face from 5 landmarks.

    Proportions fitted to the ArcFace template so the ellipse spans brows to chin, cheek to cheek.
    """
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    eyes, mouth = lm[:2].mean(0), lm[3:].mean(0)
    eye_vec = lm[1] - lm[0]
    eye_mouth = float(np.linalg.norm(mouth - eyes))
    angle = float(np.degrees(np.arctan2(eye_vec[1], eye_vec[0])))
    centre = eyes + 0.3 * (mouth - eyes)
    return centre, (1.15 * float(np.linalg.norm(eye_vec)), 1.3 * eye_mouth), angle


def face_mask(crop_size: int, landmarks_in_crop: np.ndarray | None = None, feather_px: float | None = None) -> np.ndarray:
    """(S, S) float32 in [0, 1]: 1 inside the face ellipse, a smoothstep ramp `feather_px` wide just
    inside its edge, exactly 0 outside it and on the outermost crop pixels (so an inverse warp of the
    mask never reaches past the crop). Landmarks default to the ArcFace template positions.
    """
    import cv2

    lm = template(crop_size) if landmarks_in_crop is None else landmarks_in_crop
    feather = max(1.0, crop_size / 16.0 if feather_px is None else float(feather_px))
    centre, axes, angle = face_ellipse(lm)
    shift = 4  # sub-pixel ellipse drawing
    binary = np.zeros((crop_size, crop_size), np.uint8)
    cv2.ellipse(binary, tuple(int(round(v * (1 << shift))) for v in centre),
                tuple(int(round(v * (1 << shift))) for v in axes), angle, 0, 360, 1, -1, cv2.LINE_8, shift)
    binary[[0, -1], :] = 0
    binary[:, [0, -1]] = 0
    dist = cv2.distanceTransform(binary, cv2.DIST_L2, 5)
    x = np.clip(dist / feather, 0.0, 1.0)
    return (x * x * (3 - 2 * x)).astype(np.float32)
