"""The identity loss's recogniser side (paper eq. 5): a registered recogniser's frozen torch core behind
a differentiable alignment.

The recognisers themselves live in `ipfacediff.recognition` (one stack for metrics and loss):
`finetune_id.recognizer` names a backend with a torch core (`sface`: the packaged SFace ONNX as torch;
`arcface`: insightface IResNet / pack ONNX from `finetune_id.recognizer_weights`), and
`load_recognizer` returns that very module.

`AlignToRecognizer` maps training crops (already 5-point aligned to the ArcFace template scaled to the
crop size, see `ipfacediff.face.align.template`) onto the recogniser's own template with a fixed
similarity transform, differentiably (affine_grid + grid_sample).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..recognition import FaceRecognizer, differentiable, differentiable_names

INPUT_SIZE = 112


def load_recognizer(name: str, weights: str | Path | None = None) -> FaceRecognizer:
    """The frozen torch core of registered recogniser `name` (params finetune_id.recognizer)."""
    if name not in differentiable_names():
        known = ", ".join(differentiable_names())
        raise InputError("params.yaml", f"finetune_id.recognizer: unknown recogniser {name!r}; expected one of {known}")
    return differentiable(name, weights)


# --------------------------------------------------------------------------- differentiable alignment


def pixel_affine_to_theta(M: np.ndarray, in_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """affine_grid theta (align_corners=False) for the pixel map M: input px -> output px (OpenCV centres).

    affine_grid asks, for each OUTPUT location in normalised coordinates, where to read the INPUT;
    so theta = N_in . M^-1 . N_out^-1 with N(x) = (2x + 1) / size - 1.
    """
    (h_in, w_in), (h_out, w_out) = in_size, out_size

    def norm(w: int, h: int) -> np.ndarray:
        return np.array([[2.0 / w, 0, 1.0 / w - 1], [0, 2.0 / h, 1.0 / h - 1], [0, 0, 1]])

    M3 = np.vstack([np.asarray(M, np.float64), [0, 0, 1]])
    theta = norm(w_in, h_in) @ np.linalg.inv(M3) @ np.linalg.inv(norm(w_out, h_out))
    return torch.tensor(theta[:2], dtype=torch.float32)


class AlignToRecognizer(nn.Module):
    """Fixed similarity warp of aligned crops onto the recogniser's template (differentiable; ArcFace 112 px by default).

    Crops that the warp shrinks are first area-averaged to the output's pixel pitch so the bilinear
    warp does not alias; normalised coordinates do not depend on resolution, so theta stays valid.
    """

    def __init__(self, crop_size: int, crop_scale: float = 1.0, out_size: int = INPUT_SIZE, out_template: np.ndarray | None = None):
        super().__init__()
        from ..face.align import ARCFACE_112, template, umeyama

        if out_template is None:  # the ArcFace template at the output size
            out_template = ARCFACE_112 * (out_size / 112.0)
        M = umeyama(template(crop_size, crop_scale), out_template)  # crop px -> out px
        self.crop_size, self.out_size = crop_size, out_size
        self.scale = math.sqrt(abs(np.linalg.det(M[:, :2])))
        self.register_buffer("theta", pixel_affine_to_theta(M, (crop_size, crop_size), (out_size, out_size))[None], persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        if (h, w) != (self.crop_size, self.crop_size):
            raise ValueError(f"expected {self.crop_size}x{self.crop_size} crops, got {h}x{w}")
        if self.scale < 1:  # box-filter down to the output's pixel pitch (adaptive average pooling)
            side = max(1, round(h * self.scale))
            images = F.interpolate(images, size=(side, side), mode="area")
        grid = F.affine_grid(self.theta.to(images.dtype).expand(n, 2, 3), [n, 3, self.out_size, self.out_size], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class IdentityDistance(nn.Module):
    """Per-sample 1 - cos(R(align(a)), R(align(b))) with a frozen recogniser R."""

    def __init__(self, recognizer: FaceRecognizer, crop_size: int, crop_scale: float = 1.0):
        super().__init__()
        self.recognizer = recognizer
        self.align = AlignToRecognizer(crop_size, crop_scale, recognizer.input_size, recognizer.template)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.recognizer(self.align(images))

    def forward(self, images_hat: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        from .losses import cosine_distance

        with torch.no_grad():
            target = self.embed(images)
        return cosine_distance(self.embed(images_hat), target)
