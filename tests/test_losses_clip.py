"""Directional CLIP loss through real (random-weight) transformers CLIP models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ipfacediff.train.clip_loss import ClipEncoder, DirectionalClipLoss, load_directional_loss


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from ipfacediff.diffusion.models import build_tiny_clip

    d = tmp_path_factory.mktemp("clip") / "clip"
    build_tiny_clip(d, seed=0)
    return d


@pytest.mark.parametrize("side", [64, 256, 512])
@pytest.mark.parametrize("paper_size", [False, True])
def test_preprocess_matches_clip_image_processor(clip_dir, media_dir, side, paper_size):
    """Our differentiable resize/crop/normalise vs transformers' CLIPImageProcessor (PIL bicubic).

    Tolerance: mean |diff| < 0.03 in normalised units (values span about +-2); measured 0.004-0.022.
    """
    import cv2
    from transformers import CLIPImageProcessor

    from ipfacediff.diffusion.clip_model import load_clip_model

    c = load_clip_model(clip_dir)
    proc = CLIPImageProcessor() if paper_size else c.processor  # 224 px (ViT-B) or the tiny model's 64 px
    enc = ClipEncoder(c.model, c.tokenizer, proc)
    img = cv2.imread(str(media_dir / "stills" / "skimage_astronaut.png"))[:, :, ::-1]
    img = np.ascontiguousarray(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA))
    want = proc(images=img, return_tensors="pt")["pixel_values"]
    got = enc.preprocess(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1)
    assert got.shape == want.shape
    assert (got - want).abs().mean().item() < 0.03


def test_directional_clip_loss_values_and_gradients(clip_dir):
    loss = load_directional_loss([clip_dir])
    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    edit = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1).requires_grad_(True)
    tgt, ref = ["a photo of a person wearing eyeglasses"] * 2, ["a photo of a person", "a smiling person"]
    out = loss(edit, src, tgt, ref)
    assert out.shape == (2,) and torch.all((out >= 0) & (out <= 2))
    out.sum().backward()
    assert edit.grad is not None and edit.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    # no image change -> zero image direction -> cos 0 -> loss 1
    same = loss(src, src, tgt, ref)
    np.testing.assert_allclose(same.detach().numpy(), [1.0, 1.0], atol=1e-6)
    # the same text twice: zero text direction -> loss 1 whatever the images
    np.testing.assert_allclose(loss(edit, src, ref, ref).detach().numpy(), [1.0, 1.0], atol=1e-6)


def test_directional_loss_agrees_with_clip_features_by_hand(clip_dir):
    """The module's value = 1 - cos of the normalised feature differences computed here in float64."""
    loss = load_directional_loss([clip_dir])
    enc = loss.encoders[0]
    g = torch.Generator().manual_seed(1)
    src, edit = (torch.rand(1, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    tgt, ref = ["a photo of a person with a beard"], ["a photo of a person"]
    with torch.no_grad():
        fi = [f.double()[0] / f.double()[0].norm() for f in (enc.image_features(edit), enc.image_features(src))]
        ft = [f.double()[0] / f.double()[0].norm() for f in (enc.text_features(tgt), enc.text_features(ref))]
        di, dt = fi[0] - fi[1], ft[0] - ft[1]
        want = 1 - (di @ dt / di.norm() / dt.norm()).item()
        assert loss(edit, src, tgt, ref).item() == pytest.approx(want, abs=1e-5)
        # two CLIP models: the mean of their losses
        twice = DirectionalClipLoss([enc, enc])
        assert twice(edit, src, tgt, ref).item() == pytest.approx(want, abs=1e-5)


def test_missing_clip_folder_is_a_clear_error(tmp_path):
    from ipfacediff.errors import InputError

    with pytest.raises(InputError) as e:
        load_directional_loss([tmp_path / "no_clip_here"])
    assert "no_clip_here" in str(e.value)
