"""The CLIP model of the directional loss and the CLIP scores (transformers layout), loaded from a
folder or an `ipfacediff.json` pointer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import InputError
from .architectures import MAX_TOKENS
from .device import resolve_dtype
from .hub import first_line, follow_pointer


@dataclass
class ClipComponents:
    model: Any
    tokenizer: Any
    processor: Any
    info: dict = field(default_factory=dict)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable CLIP preprocessing of images (N, 3, H, W) in [-1, 1]: resize + normalise."""
        import torch.nn.functional as F

        size = self.model.config.vision_config.image_size
        x = F.interpolate(images.float().add(1).div(2), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(self.processor.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.processor.image_std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.model.dtype)

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """Projected CLIP image features (N, P) of images in [-1, 1] (unnormalised; keeps gradients)."""
        return projected_features(self.model.get_image_features(pixel_values=self.pixels(images)))

    def text_embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        """Projected CLIP text features (N, P) (unnormalised)."""
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
        return projected_features(self.model.get_text_features(input_ids=ids.to(self.model.device)))


def projected_features(out) -> torch.Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output holds the projection; 4.x a tensor
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_clip_model(clip_dir: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32) -> ClipComponents:
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder, info = follow_pointer(clip_dir, required=("config.json",))
    try:
        model = CLIPModel.from_pretrained(str(folder), torch_dtype=resolve_dtype(dtype), local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        processor = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise InputError(folder, f"cannot load CLIP model: {first_line(e)}") from e
    return ClipComponents(model.to(device).eval().requires_grad_(False), tokenizer, processor, info)
