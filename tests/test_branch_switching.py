"""Adapter switching of LoRA branches (branches._activate_adapter): the same outputs as diffusers'
set_adapters/disable_adapters, without peft's per-switch walk over every adapter parameter."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel

from ipfacediff.diffusion.branches import BranchSet, add_lora_adapters, lora_config

NAMES = ("identity", "directional")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8, norm_num_groups=8,
    )
    add_lora_adapters(unet, {n: lora_config(4) for n in NAMES})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:  # gaussian init leaves B = 0: make the adapters do something, differently
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return unet.requires_grad_(False)  # inference, as in the editor


def branch_set(unet) -> BranchSet:
    return BranchSet(base=unet, unets={"identity": unet, "directional": unet, "none": unet},
                     adapters={"identity": "identity", "directional": "directional", "none": None})


def test_switching_matches_diffusers_set_adapters(unet):
    x, e = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)), torch.randn(1, 5, 32)
    reference = copy.deepcopy(unet)
    branches = branch_set(unet)
    outputs = {}
    with torch.no_grad():
        # every transition, including a switch to the state already active (the no-op path)
        for name in ("identity", "none", "directional", "directional", "identity", "none", "none", "directional", "identity"):
            if name == "none":
                reference.disable_adapters()
            else:
                reference.enable_adapters()
                reference.set_adapters([name])
            with branches.use(name) as u:
                got = u(x, 10, e).sample
            assert torch.equal(got, reference(x, 10, e).sample), name
            outputs.setdefault(name, got)
    assert (outputs["identity"] - outputs["directional"]).abs().max() > 1e-3
    assert (outputs["identity"] - outputs["none"]).abs().max() > 1e-3


def test_a_switch_leaves_requires_grad_alone(unet):
    """peft's set_adapter would mark the active adapter trainable: the editor's switch does not walk
    the parameters at all."""
    branches = branch_set(unet)
    for name in ("directional", "none", "identity"):
        with branches.use(name):
            pass
        assert not any(p.requires_grad for p in unet.parameters()), name


def test_an_unknown_adapter_is_refused(unet):
    with pytest.raises(ValueError, match="no LoRA adapter 'other'"):
        with BranchSet(base=unet, unets={"identity": unet}, adapters={"identity": "other"}).use("identity"):
            pass
