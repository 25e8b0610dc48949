"""One recogniser stack: a frozen differentiable torch core, and the numpy adapter the metrics call.

    rec = get_recognizer("sface")      # a TorchRecognizer (registry entry)
    rec.embed(crops_uint8)             # metrics: numpy adapter, (B, D) unit-norm float32
    rec.core(images_in_minus1_1)       # identity loss: the same torch module, differentiable

`FaceRecognizer` is the core: a frozen network on (N, 3, S, S) RGB crops aligned to the recogniser's
template. The loss feeds images in [-1, 1] (`forward`), the adapter feeds uint8 pixels (`embed_pixels`);
each is mapped straight into the range the network was trained on, so neither path rounds through
the other's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Recognizer
from .templates import ARCFACE_112


class FaceRecognizer(nn.Module):
    """Frozen recogniser network: (N, 3, S, S) RGB aligned to its template -> (N, D) raw embedding.

    `input_0_255`: the network takes RGB in [0, 255] (a graph that normalises itself, e.g. SFace)
    rather than [-1, 1] (IResNet, InsightFace graphs without a leading Sub/Mul).
    """

    def __init__(self, net: nn.Module, name: str, input_0_255: bool, input_size: int = 112, template: np.ndarray | None = None):
        super().__init__()
        self.net = net
        self.name = name
        self.input_0_255 = input_0_255
        self.input_size = input_size
        # (5, 2) px in the input crop, where the loss aligns faces to; default: ArcFace's at this size
        self.template = np.asarray(ARCFACE_112 * (input_size / 112.0) if template is None else template, np.float64)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # frozen: BatchNorm statistics never update
        return super().train(False)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        param = next(self.net.parameters())
        return self.net(x.to(param.device, param.dtype))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (the training crops' range): differentiable."""
        return self._run((images + 1.0) * 127.5 if self.input_0_255 else images)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float RGB pixel values in [0, 255] (the uint8 crops the metrics align)."""
        return self._run(pixels if self.input_0_255 else (pixels - 127.5) / 127.5)


class TorchRecognizer(Recognizer):
    """A registry backend whose network is a `FaceRecognizer` (`self.core`, built in `__init__`).

    `_forward` is the numpy adapter: uint8 crops -> the core under inference mode -> float32 numpy.
    The identity loss uses `self.core` itself (see `recognition.differentiable`).
    """

    core: FaceRecognizer

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            return self.core.embed_pixels(x).float().cpu().numpy()
