"""Directional CLIP loss (StyleGAN-NADA) with one or more frozen transformers CLIP models.

Images go through CLIP differentiably: bicubic resize of the (square, aligned) face to the model's
input size and its own mean/std normalisation, i.e. CLIPImageProcessor's steps written in torch.
With several CLIP models (NADA used ViT-B/32 and ViT-B/16) the loss is their mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .losses import directional_loss


class ClipEncoder(nn.Module):
    """One frozen CLIP: image and text features (projected, unnormalised)."""

    def __init__(self, model, tokenizer, processor, name: str = "clip"):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        size = getattr(processor, "crop_size", None) or model.config.vision_config.image_size
        self.size = int(size if isinstance(size, int) else size["height"])  # dict or transformers' SizeDict
        mean = getattr(processor, "image_mean", None) or [0.48145466, 0.4578275, 0.40821073]
        std = getattr(processor, "image_std", None) or [0.26862954, 0.26130258, 0.27577711]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True):  # frozen
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB (N, 3, H, W) -> CLIP input; shorter side resized then centre-cropped, like the processor."""
        x = (images.float() + 1) / 2
        h, w = x.shape[-2:]
        s = self.size / min(h, w)
        if (h, w) != (self.size, self.size):
            x = F.interpolate(
                x, size=(max(self.size, round(h * s)), max(self.size, round(w * s))), mode="bicubic", align_corners=False, antialias=s < 1
            )
            top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
            x = x[..., top : top + self.size, left : left + self.size]
        return (x - self.mean) / self.std

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images).to(self.model.dtype)
        return _features(self.model.get_image_features(pixel_values=pixels)).float()

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Features of `texts`, cached per string (prompts and captions repeat every epoch).

        One string per forward pass: batched matmuls round differently with the batch's make-up, and
        a resumed run must see bit-identical features whatever was cached before the interruption.
        """
        for t in dict.fromkeys(texts):
            if t not in self._text_cache:
                tok = self.tokenizer(
                    [t], padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length, return_tensors="pt"
                )
                self._text_cache[t] = _features(
                    self.model.get_text_features(**{k: v.to(self.mean.device) for k, v in tok.items()})
                ).float()[0]
        return torch.stack([self._text_cache[t] for t in texts])


def _features(out) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class DirectionalClipLoss(nn.Module):
    """Per-sample directional loss, averaged over the CLIP models given."""

    def __init__(self, encoders: Sequence[ClipEncoder]):
        super().__init__()
        if not encoders:
            raise ValueError("need at least one CLIP model")
        self.encoders = nn.ModuleList(encoders)

    def forward(self, img_edit: torch.Tensor, img_src: torch.Tensor, targets: Sequence[str], references: Sequence[str]) -> torch.Tensor:
        losses = []
        for enc in self.encoders:
            with torch.no_grad():
                src = enc.image_features(img_src)
            losses.append(directional_loss(enc.image_features(img_edit), src, enc.text_features(targets), enc.text_features(references)))
        return torch.stack(losses).mean(0)


def load_directional_loss(clip_dirs: Sequence[str | Path], device: str | torch.device = "cpu", dtype=torch.float32) -> DirectionalClipLoss:
    """CLIP models from local folders, `models/clip` pointers or Hugging Face ids in the local cache."""
    from ..diffusion.clip_model import load_clip_model
    from ..diffusion.hub import resolve_pretrained

    encoders = []
    for d in clip_dirs:
        folder = d if Path(d).is_dir() else resolve_pretrained(d, required=("config.json",), param="finetune_dir.extra_clip")
        c = load_clip_model(folder, device=device, dtype=dtype)
        encoders.append(ClipEncoder(c.model, c.tokenizer, c.processor, name=str(c.info.get("spec") or c.info.get("path") or d)))
    return DirectionalClipLoss(encoders).to(device)
