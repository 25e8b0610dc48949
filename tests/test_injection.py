"""PnP identity guidance: the directional branch uses the identity branch's q/k and resblock
features at the injected layers and steps, and its own everywhere else (LoRA and full branches)."""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import pytest
import torch

from ipfacediff.diffusion.branches import BranchSet, add_lora_adapters, lora_config
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
    add_lora_adapters(unet, {name: lora_config(4) for name in ("identity", "directional")})  # one tuner: no peft warning
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
        self.flow = {}  # (step, mode, role, layer, "to_q" | "to_k" | "to_v" | "result") -> tensor

    def observe(self, st, layer, q, k):
        self.now = (st.step, st.mode, st.role)
        first = self.qk[self.now]  # first batch of the pass
        if layer not in first:
            first[layer] = None if q is None else (q.clone(), k.clone())

    def projection_hook(self, layer, what):
        """q/k/v from the projections' outputs and the attention RESULT (the input of `to_out.0`): the
        tensors that flow on, first batch of each pass. The observer runs after a layer's projections,
        but the previous self-attention layer of the same pass set the same (step, mode, role): the
        layers watched here are never a pass's first self-attention."""
        def hook(module, args, output=None):
            self.flow.setdefault((*self.now, layer, what), (args[0] if what == "result" else output).clone())
        return hook

    def resblock_hook(self, module, args, out):
        inp = args[0]
        skip = module.conv_shortcut(inp) if module.conv_shortcut is not None else inp
        self.res.setdefault(self.now, out * module.output_scale_factor - skip)


def run(comps, cache, branches, method):
    pipe = IPFaceDiffPipeline(comps, branches, EditConfig(steps=STEPS, keyframe_interval=4, batch_size=8), progress=False)
    rec = Recorder()
    pipe.observer = rec.observe
    handles = [u.get_submodule(PNP_RESNET).register_forward_hook(rec.resblock_hook) for u in branches.distinct_unets()]
    for u in branches.distinct_unets():
        for layer in WATCHED:
            attn = u.get_submodule(layer)
            handles += [getattr(attn, w).register_forward_hook(rec.projection_hook(layer, w)) for w in ("to_q", "to_k", "to_v")]
            handles.append(attn.to_out[0].register_forward_pre_hook(rec.projection_hook(layer, "result")))
    try:
        out = pipe("a photo of a person with a beard", cache, method=method, generator=torch.Generator().manual_seed(0))
    finally:
        for h in handles:
            h.remove()
    return out, rec


# an injected layer and a decoder layer that is not injected (up_blocks[1].attentions[0])
WATCHED = ("up_blocks.2.attentions.1.transformer_blocks.0.attn1", "up_blocks.1.attentions.0.transformer_blocks.0.attn1")


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
        assert_attention_results(comps, rec, step, n_qk)


def assert_attention_results(comps, rec, step: int, n_qk: int) -> None:
    """The attention RESULT of the directional branch's keyframe pass equals plain joint softmax
    attention with the identity branch's q and k and its own v at injected layers and steps, and with
    its own q, k, v elsewhere; q, k, v as the projections produced them. float64 on both sides: they
    differ by round-off only (values O(1), sums over <= 3 keyframes x 64 tokens: < 1e-13); 1e-10 leaves room, and
    taking any one of q, k from the other branch changes the result by > 1e-2 (asserted)."""
    for layer in WATCHED:
        src = {w: rec.flow[(step, "keyframes", "source", layer, w)] for w in ("to_q", "to_k")}
        own = {w: rec.flow[(step, "keyframes", "edit", layer, w)] for w in ("to_q", "to_k", "to_v")}
        result = rec.flow[(step, "keyframes", "edit", layer, "result")]
        heads = comps.unet.get_submodule(layer).heads
        inject = layer in EXPECTED_LAYERS and step < n_qk
        q, k = (torch.cat([src["to_q"]] * 2), torch.cat([src["to_k"]] * 2)) if inject else (own["to_q"], own["to_k"])
        expect = joint_softmax(q, k, own["to_v"], heads)
        assert (result - expect).abs().max().item() < 1e-10, (step, layer)
        if inject:  # the injection is a real change of the result
            assert (joint_softmax(own["to_q"], own["to_k"], own["to_v"], heads) - expect).abs().max().item() > 1e-2


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


def joint_softmax(q, k, v, heads: int):
    """Plain float64 joint attention per CFG half: every keyframe's queries over all keyframes' K/V."""
    G2, _, C = q.shape
    K, d = G2 // 2, C // heads
    out = torch.empty_like(q)
    for g in range(2):
        rows = range(g * K, (g + 1) * K)
        for h in range(heads):
            c = slice(h * d, (h + 1) * d)
            k_all, v_all = torch.cat([k[j, :, c] for j in rows]), torch.cat([v[j, :, c] for j in rows])
            for j in rows:
                out[j, :, c] = torch.softmax(q[j, :, c] @ k_all.T / d**0.5, dim=-1) @ v_all
    return out
