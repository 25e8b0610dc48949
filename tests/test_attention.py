"""Joint keyframe attention against a naive float64 reference; processors and memory options."""

from __future__ import annotations

import math

import pytest
import torch

from ipfacediff.diffusion import attention as A
from ipfacediff.diffusion.attention import EditAttnProcessor, EditState, assert_installed, install_processors
from ipfacediff.diffusion.pipeline import apply_memory_options

TOL32 = 1e-5  # float32 kernels vs the float64 reference (values are O(1))


def naive_joint(q, k, v, heads, groups):
    """Explicit softmax(Q K^T / sqrt(d)) V, float64, per group, keyframe and head, over the
    concatenation of all keyframes' tokens of the group."""
    N, S, C = q.shape
    K, d = N // groups, C // heads
    q, k, v = q.double(), k.double(), v.double()
    out = torch.zeros_like(q)
    for g in range(groups):
        rows = range(g * K, (g + 1) * K)
        for h in range(heads):
            hs = slice(h * d, (h + 1) * d)
            kc = torch.cat([k[j, :, hs] for j in rows])  # (K*S, d)
            vc = torch.cat([v[j, :, hs] for j in rows])
            for i in rows:
                w = torch.softmax(q[i, :, hs] @ kc.T / math.sqrt(d), dim=-1)
                out[i, :, hs] = w @ vc
    return out


def rand_qkv(N=6, S=10, C=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N, S, C, generator=g) for _ in range(3)]


@pytest.mark.parametrize("chunk", [4096, 7, 1])
def test_joint_attention_matches_float64_reference(chunk):
    q, k, v = rand_qkv()
    ref = naive_joint(q, k, v, heads=4, groups=2)
    out = A.joint_attention(q, k, v, heads=4, groups=2, chunk=chunk)
    assert out.dtype == torch.float32
    assert (out.double() - ref).abs().max().item() < TOL32
    # float64 inputs through the same code: agreement to round-off
    out64 = A.joint_attention(q.double(), k.double(), v.double(), heads=4, groups=2, chunk=chunk)
    assert (out64 - ref).abs().max().item() < 1e-10


def test_joint_attention_groups_do_not_mix():
    q, k, v = rand_qkv()
    out = A.joint_attention(q, k, v, heads=2, groups=2)
    k2, v2 = k.clone(), v.clone()
    k2[3:], v2[3:] = torch.randn_like(k2[3:]), torch.randn_like(v2[3:])  # change group 1 only
    out2 = A.joint_attention(q, k2, v2, heads=2, groups=2)
    assert torch.equal(out[:3], out2[:3]) and not torch.allclose(out[3:], out2[3:])


def test_single_keyframe_joint_equals_frame_attention():
    q, k, v = rand_qkv(N=2)
    assert torch.allclose(A.joint_attention(q, k, v, heads=4, groups=2), A.frame_attention(q, k, v, heads=4), atol=1e-6)


def test_joint_attention_shares_kv_and_chunks_queries(monkeypatch):
    """K/V reach SDPA as views of the inputs (never repeated per keyframe); queries are chunked so
    each call's score block is chunk x (K*S), linear in the keyframe count."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        calls.append((q.shape, k.shape, k.untyped_storage().data_ptr(), v.untyped_storage().data_ptr()))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(A.F, "scaled_dot_product_attention", spy)
    K, S, C, H, chunk = 5, 12, 16, 4, 16
    q, k, v = rand_qkv(N=2 * K, S=S, C=C)
    A.joint_attention(q, k, v, heads=H, groups=2, chunk=chunk)
    assert len(calls) == math.ceil(K * S / chunk)
    for q_shape, k_shape, k_ptr, v_ptr in calls:
        assert q_shape[-2] <= chunk
        assert tuple(k_shape) == (2, H, K * S, C // H)
        assert k_ptr == k.untyped_storage().data_ptr() and v_ptr == v.untyped_storage().data_ptr()


def test_frame_attention_matches_diffusers_processor():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=4, dim_head=8).eval()
    x = torch.randn(3, 20, 32)
    stock = AttnProcessor2_0()(attn, x)
    state = EditState()
    proc = EditAttnProcessor("layer", state, AttnProcessor2_0())
    state.set("source", "frame")
    with torch.no_grad():
        ours = proc(attn, x)
    assert torch.allclose(ours, stock, atol=1e-6)
    state.role = "off"  # outside an edit the previous processor runs
    assert torch.equal(proc(attn, x), AttnProcessor2_0()(attn, x))


@pytest.fixture(scope="module")
def tiny_unet():
    from diffusers import UNet2DConditionModel

    from ipfacediff.diffusion.models import tiny_unet_config

    torch.manual_seed(0)
    return UNet2DConditionModel(**tiny_unet_config(8)).eval()


def unet_inputs(B=2):
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 4, 8, 8, generator=g), torch.tensor(500), torch.randn(B, 77, 64, generator=g)


@torch.no_grad()
def test_installed_processors_leave_plain_passes_unchanged(tiny_unet):
    x, t, emb = unet_inputs()
    ref = tiny_unet(x, t, emb).sample
    state = EditState()
    before = install_processors(tiny_unet, state, qk_layers=set())
    try:
        assert_installed(tiny_unet, state)
        for role in ("off", "source", "edit"):
            state.set(role, "frame")
            assert torch.allclose(tiny_unet(x, t, emb).sample, ref, atol=1e-5), role
    finally:
        tiny_unet.set_attn_processor(dict(before))
    assert not any(isinstance(p, EditAttnProcessor) for p in tiny_unet.attn_processors.values())


def test_processors_survive_memory_options_applied_first(tiny_unet):
    from diffusers.models.attention_processor import AttnProcessor2_0, SlicedAttnProcessor

    from ipfacediff.diffusion.models import tiny_vae_config
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**tiny_vae_config(64))
    apply_memory_options([tiny_unet], vae, attention_slicing="max", vae_slicing=True, vae_tiling=True)
    assert vae.use_slicing and vae.use_tiling
    state = EditState()
    before = install_processors(tiny_unet, state, qk_layers=set())
    try:
        assert_installed(tiny_unet, state)
        procs = tiny_unet.attn_processors
        cross = [p for k, p in procs.items() if k.endswith("attn2.processor")]
        assert cross and all(isinstance(p, SlicedAttnProcessor) for p in cross)  # memory option kept there
        assert all(isinstance(procs[k].inner, SlicedAttnProcessor) for k in A.self_attention_names(tiny_unet))
        # a memory option applied AFTER installation would silently drop ours: detected
        tiny_unet.set_attention_slice("max")
        with pytest.raises(RuntimeError, match="replaced"):
            assert_installed(tiny_unet, state)
    finally:
        tiny_unet.set_attn_processor(dict(before))
        tiny_unet.set_attn_processor(AttnProcessor2_0())


def test_edit_state_rejects_unknown_pass():
    with pytest.raises(ValueError):
        EditState().set("target", "frame")
