"""PnP identity guidance: the directional branch uses the identity branch's q/k and resblock
features at the injected layers and steps, and its own everywhere else (LoRA and full branches)."""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import pytest
import torch

from ipfacediff.diffusion.branches import BranchSet, lora_config
from ipfacediff.diffusion.injection import PNP_RESNET, injection_steps, pnp_attention_layers
from ipfacediff.diffusion.inversion import InversionCache, invert_video
from ipfacediff.diffusion.models import build_tiny, encode_prompt, load_components
from ipfacediff.diffusion.pipeline import EditConfig, IPFaceDiffPipeline

STEPS = 4  # pnp_attn_t 0.5 -> steps 0, 1 inject q/k; pnp_f_t 0.8 -> steps 0, 1, 2 inject features
EXPECTED_LAYERS = {
    "up_blocks.1.attentions.1.transformer_blocks.0.attn1", "up_blocks.1.attentions.2.transformer_blocks.0.attn1",
    "up_blocks.2.attentions.0.transformer_blocks.0.attn1", "up_blocks.2.attentions.1.transformer_blocks.0.attn1",
    "up_blocks.2.attentions.2.transformer_blocks.0.attn1", "up_blocks.3.attentions.0.transformer_blocks.0.attn1",
    "up_blocks.3.attentions.1.transformer_blocks.0.attn1", "up_blocks.3.attentions.2.transformer_blocks.0.attn1",
}


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    out = tmp_path_factory.mktemp("inj_models") / "base"
    build_tiny(out, seed=1)
    return load_components(out, dtype="float64")  # float64: exact comparisons are meaningful


@pytest.fixture(scope="module")
def cache(comps, tmp_path_factory):
    g = np.random.default_rng(0)
    frames = np.clip(g.normal(128, 40, (1, 64, 64, 3)) + np.arange(9)[:, None, None, None] * 4, 0, 255).astype(np.uint8)
    path = invert_video(comps, BranchSet(base=comps.unet), frames, tmp_path_factory.mktemp("inv") / "v.safetensors",
                        "a photo of a person", steps=STEPS, progress=False)
    return InversionCache(path)


def perturb(module, seed, scale=0.05, only=None):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if only is None or only in n:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def lora_branches(comps) -> BranchSet:
    unet = copy.deepcopy(comps.unet)
    for name in ("identity", "directional"):
        unet.add_adapter(lora_config(4), adapter_name=name)
    unet.to(torch.float64)
    perturb(unet, 0, scale=0.3, only="lora_B")  # B starts at zero: make the two adapters differ
    return BranchSet(base=unet, unets={"identity": unet, "directional": unet},
                     adapters={"identity": "identity", "directional": "directional"},
                     sources={"identity": "lora:test", "directional": "lora:test"})


def full_branches(comps) -> BranchSet:
    base = copy.deepcopy(comps.unet)
    ident, direc = copy.deepcopy(base), copy.deepcopy(base)
    perturb(ident, 1)
    perturb(direc, 2)
    return BranchSet(base=base, unets={"identity": ident, "directional": direc}, adapters={"identity": None, "directional": None},
                     sources={"identity": "full:test", "directional": "full:test"})


class Recorder:
    """Observer + resblock hook: what each pass used, by (step, mode, role)."""

    def __init__(self):
        self.qk = defaultdict(dict)  # (step, mode, role) -> layer -> (q, k)
        self.res = {}  # (step, mode, role) -> residual features the resblock added
        self.now = None
        self.unets = set()

    def observe(self, st, layer, q, k):
        self.now = (st.step, st.mode, st.role)
        first = self.qk[self.now]  # first batch of the pass
        if layer not in first:
            first[layer] = None if q is None else (q.clone(), k.clone())

    def resblock_hook(self, module, args, out):
        inp = args[0]
        skip = module.conv_shortcut(inp) if module.conv_shortcut is not None else inp
        self.res.setdefault(self.now, out * module.output_scale_factor - skip)


def run(comps, cache, branches, method):
    pipe = IPFaceDiffPipeline(comps, branches, EditConfig(steps=STEPS, keyframe_interval=4, batch_size=8), progress=False)
    rec = Recorder()
    pipe.observer = rec.observe
    handles = [u.get_submodule(PNP_RESNET).register_forward_hook(rec.resblock_hook) for u in branches.distinct_unets()]
    try:
        out = pipe("a photo of a person with a beard", cache, method=method, generator=torch.Generator().manual_seed(0))
    finally:
        for h in handles:
            h.remove()
    return out, rec


def split_groups(t):
    return t.chunk(2)  # edit batches are [uncond, cond]


def test_pnp_layers_are_decoder_blocks_4_to_11(comps):
    assert pnp_attention_layers(comps.unet) == EXPECTED_LAYERS


def test_injection_step_thresholds():
    assert injection_steps(50, 0.5) == 25 and injection_steps(50, 0.8) == 40
    assert injection_steps(4, 0.5) == 2 and injection_steps(4, 0.8) == 3 and injection_steps(10, 0.0) == 0
    with pytest.raises(ValueError):
        injection_steps(10, 1.5)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_directional_branch_uses_identity_features_only_where_scheduled(comps, cache, kind):
    branches = lora_branches(comps) if kind == "lora" else full_branches(comps)
    out, rec = run(comps, cache, branches, "ours")
    n_qk, n_f = injection_steps(STEPS, 0.5), injection_steps(STEPS, 0.8)
    for step in range(STEPS):
        for mode in ("keyframes", "propagate"):
            src, edit = rec.qk[(step, mode, "source")], rec.qk[(step, mode, "edit")]
            assert src and edit
            if mode == "keyframes":
                for layer, (q_e, k_e) in edit.items():
                    q_s, k_s = src[layer]
                    for qg, kg in zip(split_groups(q_e), split_groups(k_e)):
                        same = torch.equal(qg, q_s) and torch.equal(kg, k_s)
                        assert same == (layer in EXPECTED_LAYERS and step < n_qk), (step, layer)
            else:  # propagated outputs: no attention computed in the edit pass
                assert all(v is None for v in edit.values())
            r_src, r_edit = rec.res[(step, mode, "source")], rec.res[(step, mode, "edit")]
            for r in split_groups(r_edit):
                close = torch.allclose(r, r_src, atol=1e-9)
                assert close == (step < n_f), (step, mode)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_injected_tensors_are_the_identity_branch_on_the_inverted_latents(comps, cache, kind):
    """Independent of the processors: recompute the identity branch's q/k at step 0 with stock
    attention and compare with what the edit pass used."""
    branches = lora_branches(comps) if kind == "lora" else full_branches(comps)
    out, rec = run(comps, cache, branches, "ours")
    layer = "up_blocks.2.attentions.1.transformer_blocks.0.attn1"
    kf = out.info["keyframes"][0]
    x = cache.latents(0, frames=kf).to(torch.float64)
    emb = encode_prompt(comps, cache.prompt).expand(len(kf), -1, -1)
    got = {}
    with torch.no_grad():
        for name in ("identity", "directional"):
            with branches.use(name) as unet:
                attn = unet.get_submodule(layer)
                h = attn.to_q.register_forward_hook(lambda m, a, o: got.setdefault(name, o.clone()))
                try:
                    unet(x, out.info["timesteps"][0], encoder_hidden_states=emb)
                finally:
                    h.remove()
    q_used = split_groups(rec.qk[(0, "keyframes", "edit")][layer][0])[1]
    assert torch.allclose(q_used, got["identity"], atol=1e-10)
    assert not torch.allclose(got["identity"], got["directional"], atol=1e-3)  # the branches do differ


@pytest.mark.parametrize("method", ["no_id_guidance", "per_frame"])
def test_injection_switch_per_method(comps, cache, method):
    out, rec = run(comps, cache, lora_branches(comps), method)
    mode = "frame" if method == "per_frame" else "keyframes"
    for step in range(STEPS):
        src, edit = rec.qk[(step, mode, "source")], rec.qk[(step, mode, "edit")]
        layer = "up_blocks.3.attentions.0.transformer_blocks.0.attn1"
        injected = torch.equal(split_groups(edit[layer][0])[0], src[layer][0])
        assert injected == (method == "per_frame" and step < 2)
        r_close = torch.allclose(split_groups(rec.res[(step, mode, "edit")])[0], rec.res[(step, mode, "source")], atol=1e-9)
        assert r_close == (method == "per_frame" and step < 3)


def test_processors_and_hooks_on_every_distinct_unet_during_the_call_only(comps, cache):
    from ipfacediff.diffusion.attention import EditAttnProcessor, self_attention_names

    branches = full_branches(comps)
    unets = branches.distinct_unets()
    assert len(unets) == 3  # base, identity, directional modules
    checks = []

    def installed(u):
        procs = u.attn_processors
        hooked = bool(u.get_submodule(PNP_RESNET + ".conv2")._forward_hooks)
        return hooked and all(isinstance(procs[k], EditAttnProcessor) for k in self_attention_names(u))

    pipe = IPFaceDiffPipeline(comps, branches, EditConfig(steps=STEPS, keyframe_interval=4), progress=False)
    pipe.observer = lambda st, layer, q, k: checks.append([installed(u) for u in unets]) if not checks else None
    pipe("a photo of a smiling person", cache, method="ours", frames=[0, 1, 2], generator=torch.Generator().manual_seed(0))
    assert checks == [[True, True, True]]
    assert not any(installed(u) for u in unets)
