"""Frames <-> VAE latents: uint8 frames to [-1, 1] tensors, encode (posterior mean) and decode in batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .models import Components


def uint8_to_tensor(frames) -> torch.Tensor:
    """(N, H, W, 3) uint8 (numpy or torch) -> (N, 3, H, W) float in [-1, 1]."""
    t = torch.as_tensor(frames)
    if t.ndim != 4 or t.shape[-1] != 3 or t.dtype != torch.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {tuple(t.shape)} {t.dtype}")
    return t.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_uint8(images: torch.Tensor):
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8 numpy."""
    return images.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode_images(components: Components, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """VAE posterior means of images (N, 3, H, W) in [-1, 1], times the scaling factor (deterministic)."""
    vae = components.vae
    s = components.vae_scale
    if images.shape[-1] % s or images.shape[-2] % s:
        raise ValueError(f"image size {tuple(images.shape[-2:])} is not a multiple of {s} (pad or crop first)")
    out = [vae.encode(b.to(vae.device, vae.dtype)).latent_dist.mean for b in images.split(batch_size)]
    return torch.cat(out) * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(components: Components, latents: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] from scaled latents (N, 4, h, w)."""
    vae = components.vae
    out = [vae.decode(b.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample for b in latents.split(batch_size)]
    return torch.cat(out).clamp(-1, 1)
