"""The one recogniser interface: aligned uint8 RGB face crops in, L2-normalised embeddings out."""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsio import sha256_file
from ..face.align import crop, umeyama
from ..portable import portable_path


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def weights_sha256(path: str | Path) -> str:
    """sha256 of a weight file (cached per path/size/mtime: hashing a 500 MB file once is enough)."""
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def require_file(path: str | Path | None, what: str, where: str) -> Path:
    """The weight file, or a one-line InputError naming it and where to get it."""
    if path is None or not Path(path).expanduser().is_file():
        raise InputError(path, f"{what} weights not found; {where}")
    return Path(path).expanduser()


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


class Recognizer(ABC):
    """A face recogniser with its own input size and 5-point alignment template.

    Subclasses set `name`, `network`, `input_size`, `template` ((5, 2) pixel coordinates in the
    input crop), `dim`, `weights_path` and implement `_forward(faces uint8 (B, S, S, 3) RGB)`.
    """

    name: str
    network: str
    input_size: int
    template: np.ndarray
    dim: int
    weights_path: Path
    weights_kind: str = "pretrained"  # "pretrained" | "random" (test doubles built from the same code)
    batch_size: int = 32

    # ------------------------------------------------------------------ alignment
    def align_transform(self, landmarks5: np.ndarray) -> np.ndarray:
        """(2, 3) affine taking image coordinates onto this recogniser's template."""
        return umeyama(np.asarray(landmarks5, np.float64).reshape(5, 2), self.template)

    def align(self, image_rgb: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        """Warp `image_rgb` so that `landmarks5` land on the template: a (S, S, 3) uint8 crop."""
        return crop(np.ascontiguousarray(image_rgb), self.align_transform(landmarks5), self.input_size)

    # ------------------------------------------------------------------ embedding
    def embed(self, faces: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 RGB aligned crops -> (B, D) float32, unit L2 norm."""
        faces = np.asarray(faces)
        s = self.input_size
        if faces.ndim == 3:
            faces = faces[None]
        if faces.ndim != 4 or faces.shape[1:] != (s, s, 3) or faces.dtype != np.uint8:
            raise ValueError(f"{self.name}: expected uint8 (B, {s}, {s}, 3) aligned RGB crops, got "
                             f"{faces.dtype} {faces.shape}")
        if len(faces) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = [self._forward(faces[i:i + self.batch_size]) for i in range(0, len(faces), self.batch_size)]
        return l2_normalize(np.concatenate(out, axis=0).reshape(len(faces), -1))

    def embed_images(self, images: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
        """Align each image on its landmarks with this recogniser's template, then embed."""
        s = self.input_size
        crops = np.stack([self.align(im, lm) for im, lm in zip(images, landmarks)]) if images else \
            np.zeros((0, s, s, 3), np.uint8)
        return self.embed(crops)

    @abstractmethod
    def _forward(self, faces: np.ndarray) -> np.ndarray:
        """Raw embeddings (B, D) for a batch of aligned crops."""

    # ------------------------------------------------------------------ provenance
    @property
    def weights_sha256(self) -> str:
        return weights_sha256(self.weights_path)

    def info(self) -> dict:
        return {
            "name": self.name, "network": self.network, "input_size": self.input_size, "dim": self.dim,
            "weights": portable_path(self.weights_path), "weights_sha256": self.weights_sha256,
            "weights_kind": self.weights_kind, "template": np.round(self.template, 4).tolist(),
        }
