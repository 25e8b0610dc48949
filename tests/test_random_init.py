"""Random weights drawn the same everywhere: numpy PCG64 per parameter, keyed by seed and name."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ipfacediff.diffusion.random_init import init_random_weights, parameter_rng, round_significant


def test_the_stream_is_pinned():
    # numpy specifies PCG64 + SeedSequence bit for bit; these values are what every machine must draw
    # (a change here means a numpy upgrade changed the stream, and every built model with it)
    got = parameter_rng(0, "unet/conv_in.weight").uniform(size=3)
    assert got.tolist() == [0.9044080846194946, 0.47683744485510093, 0.21525834920397502]
    assert parameter_rng(1, "unet/conv_in.weight").uniform() != got[0]
    assert parameter_rng(0, "unet/conv_out.weight").uniform() != got[0]


def _model():
    return torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3), torch.nn.GroupNorm(4, 16), torch.nn.Linear(300, 200),
                               torch.nn.LayerNorm(200), torch.nn.Embedding(50, 32))


def test_independent_of_torch_rng_threads_and_build_order():
    torch.manual_seed(1)
    a = init_random_weights(_model(), 0, "m").state_dict()
    torch.manual_seed(2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        b = init_random_weights(_model(), 0, "m").state_dict()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = init_random_weights(_model(), 1, "m").state_dict()
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_scales_follow_each_layer_type_default():
    m = init_random_weights(_model(), 0, "m")
    conv, gn, lin, ln, emb = m
    for layer, fan_in in ((conv, 8 * 9), (lin, 300)):
        bound = 1 / math.sqrt(fan_in)  # torch's kaiming_uniform(a=sqrt(5)) and bias default
        w = layer.weight.detach().numpy()
        assert np.abs(w).max() <= bound and abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
        assert np.abs(layer.bias.detach().numpy()).max() <= bound
    for norm in (gn, ln):
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    assert abs(float(emb.weight.detach().std()) - 1.0) < 0.05  # torch's Embedding: N(0, 1)


def test_transformers_convention_and_constants():
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, projection_dim=16)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=16, projection_dim=16)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    scale = float(model.logit_scale.detach())
    init_random_weights(model, 0, "clip", "transformers")
    fc = model.text_model.encoder.layers[0].mlp.fc1
    assert abs(float(fc.weight.detach().std()) - 0.02) < 0.004 and torch.all(fc.bias == 0)
    assert float(model.logit_scale.detach()) == scale  # a config constant, kept


def test_unknown_parameter_types_are_refused():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(3))

    with pytest.raises(NotImplementedError, match="Odd.gain"):
        init_random_weights(Odd(), 0, "x")


def test_round_significant():
    assert round_significant(3.14159265) == 3.14 and round_significant(0.000123456) == 0.000123
