"""Loss functions against hand-computed values (float64 references; tolerances stated per test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ipfacediff.train.losses import (
    add_noise,
    cosine_distance,
    directional_loss,
    directional_objective,
    identity_objective,
    predict_x0,
    reconstruction_loss,
)


def test_directional_loss_parallel_opposite_orthogonal():
    a, b = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    c = torch.tensor([[0.0, 0.0, 1.0]])
    # image moves a -> b; text moves a -> b (parallel), b -> a (opposite)
    assert directional_loss(b, a, b, a).item() == pytest.approx(0.0, abs=1e-6)
    assert directional_loss(b, a, a, b).item() == pytest.approx(2.0, abs=1e-6)
    # image direction b - a = (-1, 1, 0), text direction c - a = (-1, 0, 1): cos = 1/2
    assert directional_loss(b, a, c, a).item() == pytest.approx(0.5, abs=1e-6)


def test_directional_loss_matches_float64_reference_on_random_embeddings():
    g = torch.Generator().manual_seed(0)
    ie, isrc, tt, tr = (torch.randn(5, 16, generator=g) for _ in range(4))

    def ref(e, s, t, r):
        n = lambda v: v / np.linalg.norm(v)
        di, dt = n(e) - n(s), n(t) - n(r)
        return 1 - di @ dt / np.linalg.norm(di) / np.linalg.norm(dt)

    want = [ref(*(x[i].double().numpy() for x in (ie, isrc, tt, tr))) for i in range(5)]
    got = directional_loss(ie, isrc, tt, tr)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)  # float32 vs float64


def test_directional_loss_is_scale_invariant_per_embedding():
    """Embeddings are normalised first: scaling one CLIP output must not change the direction."""
    g = torch.Generator().manual_seed(1)
    e, s, t, r = (torch.randn(3, 8, generator=g) for _ in range(4))
    np.testing.assert_allclose(directional_loss(3 * e, s, t, 0.5 * r).numpy(), directional_loss(e, s, t, r).numpy(), atol=1e-6)


def test_cosine_distance_values():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[6.0, 8.0], [-2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(cosine_distance(x, y).numpy(), [0.0, 2.0, 1 - 1 / math.sqrt(2)], atol=1e-6)


def test_reconstruction_loss_hand_computed():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    np.testing.assert_allclose(reconstruction_loss(x_hat, x).numpy(), [(1 + 1 + 0 + 4) / 4, 0.25], atol=1e-7)


def test_predict_x0_inverts_add_noise_float64():
    g = torch.Generator().manual_seed(2)
    ac = torch.linspace(0.99, 0.01, 1000, dtype=torch.float64)
    x0 = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 500, 999])
    xt = add_noise(x0, eps, ac, t)
    a = ac[t].view(-1, 1, 1, 1)
    np.testing.assert_allclose(xt.numpy(), (a.sqrt() * x0 + (1 - a).sqrt() * eps).numpy(), atol=1e-12)
    np.testing.assert_allclose(predict_x0(xt, eps, ac, t).double().numpy(), x0.numpy(), atol=2e-4)  # float32 inside
    v = a.sqrt() * eps - (1 - a).sqrt() * x0  # v-prediction target
    np.testing.assert_allclose(predict_x0(xt, v, ac, t, "v_prediction").double().numpy(), x0.numpy(), atol=2e-4)
    with pytest.raises(ValueError):
        predict_x0(xt, eps, ac, t, "nonsense")


def test_objectives_weight_their_terms():
    recon, ident = torch.tensor([0.2, 0.4]), torch.tensor([0.5, 0.1])
    out = identity_objective(recon, ident, lambda_id=2.0)
    assert out["loss"].item() == pytest.approx(0.3 + 2.0 * 0.3)
    assert out["recon"].item() == pytest.approx(0.3) and out["identity"].item() == pytest.approx(0.3)
    out = directional_objective(recon, ident, lambda1=0.3, lambda2=0.7)
    assert out["loss"].item() == pytest.approx(0.3 * 0.3 + 0.7 * 0.3)
    assert out["directional"].item() == pytest.approx(0.3)
