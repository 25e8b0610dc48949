"""Loss terms of the two branches, as small pure functions on tensors.

identity branch (paper eq. 5):     L_id  = ||x_hat - x||^2 + lambda_id * (1 - cos(R(x_hat), R(x)))
directional branch (paper eq. 6):  L_dir = lambda1 * ||x_edit - x_src||^2
                                           + lambda2 * (1 - cos(E_I(x_edit) - E_I(x_src), E_T(t_tgt) - E_T(t_ref)))
x_hat / x_edit are the VAE-decoded x0-predictions of the UNet at a random timestep (see README.md in
this folder for why eq. 6 is read this way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def predict_x0(
    sample: torch.Tensor,
    model_output: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """The clean latent implied by the UNet output at `timesteps` (DDIM's x0-prediction)."""
    a = alphas_cumprod.to(sample.device)[timesteps].to(torch.float32).view(-1, *([1] * (sample.ndim - 1)))
    x, out = sample.float(), model_output.float()
    if prediction_type == "epsilon":
        return (x - (1 - a).sqrt() * out) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * out
    if prediction_type == "sample":
        return out
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Forward diffusion q(x_t | x_0): sqrt(a) x0 + sqrt(1 - a) noise."""
    a = alphas_cumprod.to(x0.device)[timesteps].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error in pixel space ([-1, 1] images)."""
    return (x_hat.float() - x.float()).pow(2).flatten(1).mean(1)


def cosine_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-row 1 - cos(a, b); 0 for parallel, 1 for orthogonal, 2 for opposite vectors."""
    return 1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1, eps=eps)


def directional_loss(img_edit: torch.Tensor, img_src: torch.Tensor, txt_target: torch.Tensor, txt_ref: torch.Tensor) -> torch.Tensor:
    """StyleGAN-NADA's directional CLIP loss per sample: 1 - cos(dI, dT).

    Embeddings are L2-normalised first (as NADA does) so the image and text directions are
    differences of points on the unit sphere; a zero image direction gives 1 (no information).
    """
    n = lambda v: F.normalize(v.float(), dim=-1)
    d_img = n(img_edit) - n(img_src)
    d_txt = n(txt_target) - n(txt_ref)
    return cosine_distance(d_img, d_txt.expand_as(d_img))


def identity_objective(recon: torch.Tensor, identity: torch.Tensor, lambda_id: float) -> dict[str, torch.Tensor]:
    """Paper eq. 5 averaged over the batch, with its terms for logging."""
    recon, identity = recon.mean(), identity.mean()
    return {"loss": recon + lambda_id * identity, "recon": recon.detach(), "identity": identity.detach()}


def directional_objective(recon: torch.Tensor, direction: torch.Tensor, lambda1: float, lambda2: float) -> dict[str, torch.Tensor]:
    """Paper eq. 6 averaged over the batch: lambda1 weights preservation, lambda2 the edit direction."""
    recon, direction = recon.mean(), direction.mean()
    return {"loss": lambda1 * recon + lambda2 * direction, "recon": recon.detach(), "directional": direction.detach()}
