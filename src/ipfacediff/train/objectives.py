"""The two branch objectives: one micro-batch of faces -> loss terms (paper eqs. 5 and 6).

Both noise the VAE latents of the faces to a random timestep, let the UNet predict the noise, turn
that into the x0-prediction and decode it to pixels (with gradients through the frozen VAE decoder);
the identity branch compares it with the face, the directional branch with the face AND the edit's
text direction in CLIP space.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .losses import add_noise, directional_objective, identity_objective, predict_x0, reconstruction_loss


def decode_with_grad(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (no clamp: clamping would zero the gradient of saturated pixels)."""
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.float()


def x0_images(
    unet, components, latents: torch.Tensor, text_emb: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Decoded x0-prediction of `unet` at `timesteps` for the noised `latents`."""
    ac = components.scheduler.alphas_cumprod
    noisy = add_noise(latents.float(), noise, ac, timesteps)
    # float32 inputs: under fp16/bf16 training accelerate's autocast casts them per layer
    out = unet(noisy, timesteps, encoder_hidden_states=text_emb.float()).sample
    x0 = predict_x0(noisy, out, ac, timesteps, components.scheduler.config.prediction_type)
    return decode_with_grad(components.vae, x0)


def draw_noise(latents: torch.Tensor, gen: torch.Generator, t_min: int, t_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps and noise for a batch, drawn on the CPU generator (device independent)."""
    t = torch.randint(t_min, t_max, (latents.shape[0],), generator=gen)
    noise = torch.randn(latents.shape, generator=gen, dtype=torch.float32)
    return t.to(latents.device), noise.to(latents.device)


def _latents_and_pixels(components, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    from ..diffusion.models import encode_images

    x = batch["pixels"].to(components.vae.device)
    return encode_images(components, x), x


class IdentityObjective:
    """Eq. 5: ||D(x0_hat) - x||^2 + lambda_id * (1 - cos(R(D(x0_hat)), R(x)))."""

    terms = ("recon", "identity")

    def __init__(self, components, identity_distance, lambda_id: float, t_min: int = 0, t_max: int = 1000, use_captions: bool = True):
        self.c, self.identity, self.lambda_id = components, identity_distance, lambda_id
        self.t_min, self.t_max, self.use_captions = t_min, t_max, use_captions

    def __call__(self, unet, batch: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
        from ..diffusion.models import encode_prompt

        latents, x = _latents_and_pixels(self.c, batch)
        t, noise = draw_noise(latents, gen, self.t_min, self.t_max)
        prompts = batch["caption"] if self.use_captions else [""] * len(x)
        x_hat = x0_images(unet, self.c, latents, encode_prompt(self.c, prompts), t, noise)
        return identity_objective(reconstruction_loss(x_hat, x), self.identity(x_hat, x.to(x_hat.dtype)), self.lambda_id)


class DirectionalObjective:
    """Eq. 6: lambda1 * ||D(x0_edit) - x||^2 + lambda2 * directional CLIP loss, x0_edit under the target prompt.

    Each face draws one edit prompt; the reference text is its caption (`reference="caption"`, the
    paper's BLIP-2 captions) or the prompt file's reference (`"prompt"`).
    """

    terms = ("recon", "directional")

    def __init__(
        self,
        components,
        clip_loss,
        prompts: Sequence,
        lambda1: float,
        lambda2: float,
        reference: str = "caption",
        t_min: int = 0,
        t_max: int = 1000,
    ):
        if reference not in ("caption", "prompt"):
            raise ValueError(f"reference must be 'caption' or 'prompt', got {reference!r}")
        self.c, self.clip, self.prompts = components, clip_loss, list(prompts)
        self.lambda1, self.lambda2, self.reference = lambda1, lambda2, reference
        self.t_min, self.t_max = t_min, t_max

    def texts(self, captions: Sequence[str], gen: torch.Generator) -> tuple[list[str], list[str]]:
        """(targets, references) for a batch: one random edit prompt per face."""
        pick = torch.randint(len(self.prompts), (len(captions),), generator=gen).tolist()
        targets = [self.prompts[i].target for i in pick]
        refs = [c if self.reference == "caption" and c.strip() else self.prompts[i].reference for c, i in zip(captions, pick)]
        return targets, refs

    def __call__(self, unet, batch: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
        from ..diffusion.models import encode_prompt

        targets, refs = self.texts(batch["caption"], gen)
        latents, x = _latents_and_pixels(self.c, batch)
        t, noise = draw_noise(latents, gen, self.t_min, self.t_max)
        x_edit = x0_images(unet, self.c, latents, encode_prompt(self.c, targets), t, noise)
        x = x.to(x_edit.dtype)
        return directional_objective(reconstruction_loss(x_edit, x), self.clip(x_edit, x, targets, refs), self.lambda1, self.lambda2)
