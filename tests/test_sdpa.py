"""diffusion/sdpa.py: which kernel scaled_dot_product_attention dispatches to, and the math-on-CUDA warning."""

from __future__ import annotations

import logging

import pytest
import torch
from diffusers import UNet2DConditionModel
from torch.nn.attention import SDPBackend, sdpa_kernel

from ipfacediff.diffusion import sdpa


@pytest.fixture(scope="module")
def unet():
    return UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8, norm_num_groups=8,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_default_is_the_fused_flash_kernel(dtype):
    assert sdpa.dispatched_kernel("cpu", dtype, (1, 5, 64, 64)) == "flash_for_cpu"


def test_forced_math_backend_is_reported_as_math():
    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa.dispatched_kernel("cpu", torch.float32, (1, 5, 64, 64)) == sdpa.MATH
    assert sdpa.dispatched_kernel("cpu", torch.float32, (1, 5, 64, 64)) == "flash_for_cpu"  # context restored


def test_kernel_of_ops():
    assert sdpa.kernel_of_ops(["view", "_scaled_dot_product_efficient_attention"]) == "efficient"
    assert sdpa.kernel_of_ops(["_scaled_dot_product_flash_attention"]) == "flash"
    assert sdpa.kernel_of_ops(["_scaled_dot_product_cudnn_attention"]) == "cudnn"
    assert sdpa.kernel_of_ops(["mul", "bmm", "_safe_softmax", "bmm"]) == sdpa.MATH
    with pytest.raises(ValueError):
        sdpa.kernel_of_ops(["mul", "add"])


def test_check_sdpa_reports_the_unets_first_self_attention(unet, caplog):
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    with caplog.at_level(logging.WARNING):
        rec = sdpa.check_sdpa(unet)
        with sdpa_kernel(SDPBackend.MATH):
            math = sdpa.check_sdpa(unet, latent_side=4)
    assert rec == {"kernel": "flash_for_cpu", "memory_efficient": True, "device": "cpu", "dtype": "float32",
                   "shape": [1, attn.heads, 64, 32 // attn.heads]}
    assert math["kernel"] == "math" and not math["memory_efficient"] and math["shape"][2] == 16
    assert not caplog.records  # math on the CPU is no CUDA memory hazard: no warning


def test_math_on_cuda_warns_naming_the_kernel(unet, monkeypatch, caplog):
    """The warning's condition without a GPU: a UNet that reports a CUDA device, a probe that finds math."""
    seen = {}

    def probe(device, dtype, shape):
        seen["device"] = device
        return sdpa.MATH

    monkeypatch.setattr(sdpa, "dispatched_kernel", probe)
    monkeypatch.setattr(type(unet), "device", property(lambda self: torch.device("cuda", 0)))
    with caplog.at_level(logging.WARNING):
        rec = sdpa.check_sdpa(unet)
    assert seen["device"] == torch.device("cuda", 0) and rec["kernel"] == "math" and rec["device"] == "cuda:0"
    assert len(caplog.records) == 1 and "'math' kernel on cuda:0" in caplog.records[0].getMessage()
