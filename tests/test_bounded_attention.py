"""Bounded keyframe attention (Fairy-style anchors + TokenFlow keyframe groups): the pure grouping,
anchor, estimate and switching maths, then the real pipeline on a tiny random-weight model: which keys
each keyframe attends to, which keyframes each propagated frame blends, stored state flat in video
length, and exact mode untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ipfacediff.diffusion.architectures import sd21_unet_config
from ipfacediff.diffusion.attention import cat_groups, joint_attention
from ipfacediff.diffusion.inversion import InversionCache, invert_video
from ipfacediff.diffusion.keyframe_attention import (choose_keyframe_attention, keyframe_state_bytes, self_attention_shapes)
from ipfacediff.diffusion.models import build_tiny, load_components
from ipfacediff.diffusion.pipeline import EditConfig, IPFaceDiffPipeline
from ipfacediff.diffusion.propagation import anchor_frames, blend_plan, keyframe_windows, sample_keyframes
from ipfacediff.errors import InputError
from ipfacediff.settings import EditSettings
from test_pipeline import moving_blob

GIB = 1024**3
PROMPT = "a photo of a person wearing eyeglasses"


# ------------------------------------------------------------------ pure maths


def test_anchor_frames_evenly_spaced_distinct_and_bounded():
    assert anchor_frames(100, 4).tolist() == [12, 37, 62, 87]  # centres of 4 segments of 25
    assert anchor_frames(5, 5).tolist() == [0, 1, 2, 3, 4]
    for n in range(1, 40):
        for a in range(1, n + 1):
            f = anchor_frames(n, a)
            assert len(f) == a and int(f[0]) >= 0 and int(f[-1]) < n and bool((f[1:] > f[:-1]).all())
    with pytest.raises(ValueError):
        anchor_frames(3, 4)


@pytest.mark.parametrize("n_frames,interval,group", [(40, 4, 3), (37, 3, 2), (12, 1, 5), (9, 4, 1), (20, 4, 5), (20, 4, 50)])
def test_windows_cover_every_frame_once_with_the_global_blend(n_frames, interval, group):
    kf = sample_keyframes(n_frames, interval, torch.Generator().manual_seed(n_frames))
    rest = torch.from_numpy(np.setdiff1d(np.arange(n_frames), kf.numpy()))
    plan = blend_plan(rest, kf)
    windows = keyframe_windows(plan, len(kf), group)
    assert len(windows) == -(-len(kf) // group)
    assert torch.cat([w.rows for w in windows]).sort().values.tolist() == list(range(len(rest)))  # each frame once
    for w in windows:
        assert w.end - w.start <= group and w.held_start == max(w.start - 1, 0)
        held = kf[w.held_start : w.end]
        # the window's local positions name the same keyframes and weights as the global plan
        assert held[w.plan.prev].tolist() == kf[plan.prev[w.rows]].tolist()
        assert held[w.plan.next].tolist() == kf[plan.next[w.rows]].tolist()
        assert torch.equal(w.plan.w_prev, plan.w_prev[w.rows])
        assert bool((w.plan.prev >= 0).all()) and bool((w.plan.next < len(held)).all())
    if group >= len(kf):  # one window: the plan itself (exact mode)
        assert len(windows) == 1 and windows[0].rows.tolist() == list(range(len(rest)))


def test_sd21_stored_state_per_keyframe_is_the_rehearsals_69_mb():
    shapes = self_attention_shapes(sd21_unet_config(64), (64, 64))
    assert len(shapes) == 16  # 6 down, 1 mid, 9 up transformer blocks
    per_kf = keyframe_state_bytes(shapes, 1, groups=2, prompts=1, itemsize=2)
    # 5 layers each at 64x64x320, 32x32x640, 16x16x1280 and one 8x8x1280: 11,550,720 values x (1 + 2) x 2 bytes
    assert per_kf == 11_550_720 * 3 * 2 == 69_304_320


def test_switching_rule():
    mb = 69_304_320  # bytes per keyframe (SD 2.1, 512 px, 16-bit)

    def choose(req, K, G=16, A=4, gib=8.0):
        return choose_keyframe_attention(req, K, G, A, gib, K * mb, (min(G + 1, K) + A) * mb)

    assert choose("exact", 150).used == "exact"
    assert choose("bounded", 150).used == "bounded" and choose("bounded", 150).groups == 10
    short = choose("bounded", 16)
    assert short.used == "exact" and "one group" in short.reason  # a video shorter than one group
    assert choose("auto", 38).used == "exact"  # 300 frames: 2.5 GiB fits 8
    assert choose("auto", 150).used == "bounded"  # 1200 frames: 9.7 GiB does not
    with pytest.raises(InputError, match=r"^edit\.keyframe_memory_gib"):
        choose("auto", 150, gib=1.0)  # not even one group + anchors
    with pytest.raises(InputError, match=r"^edit\.keyframe_memory_gib"):
        choose("bounded", 150, gib=0.5)


@pytest.mark.parametrize("key,value", [("keyframe_group_size", 0), ("keyframe_anchors", -1), ("keyframe_memory_gib", 0.0),
                                       ("keyframe_attention", "fast")])
def test_bad_settings_name_the_parameter(key, value):
    with pytest.raises(InputError, match=key):
        EditSettings(**{key: value})


def test_joint_attention_with_anchors_matches_naive_float64():
    """Each keyframe query of each CFG group attends to its group's own keyframes then the anchors:
    a per-query loop in float64 (softmax over the explicit key list) must agree."""
    g = torch.Generator().manual_seed(0)
    G, K, A, S, C, H = 2, 3, 2, 5, 8, 2
    q, k, v = (torch.randn(G * K, S, C, generator=g, dtype=torch.float64) for _ in range(3))
    ak, av = (torch.randn(G * A, S, C, generator=g, dtype=torch.float64) for _ in range(2))
    out = joint_attention(q, cat_groups(k, ak, G), cat_groups(v, av, G), H, G, chunk=4)
    d = C // H
    for grp in range(G):
        keys = torch.cat([k[grp * K : (grp + 1) * K].reshape(-1, C), ak[grp * A : (grp + 1) * A].reshape(-1, C)])
        vals = torch.cat([v[grp * K : (grp + 1) * K].reshape(-1, C), av[grp * A : (grp + 1) * A].reshape(-1, C)])
        for f in range(K):
            for h in range(H):
                qh = q[grp * K + f][:, h * d : (h + 1) * d]
                w = torch.softmax(qh @ keys[:, h * d : (h + 1) * d].T / d**0.5, dim=-1)
                ref = w @ vals[:, h * d : (h + 1) * d]
                # float64 throughout; the two differ only in summation order: 1e-12 >> 1e-16 x a few hundred terms
                torch.testing.assert_close(out[grp * K + f][:, h * d : (h + 1) * d], ref, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ the pipeline on a tiny model


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    out = tmp_path_factory.mktemp("bounded_models") / "base"
    build_tiny(out, seed=0)
    return load_components(out, dtype="float32")


@pytest.fixture(scope="module")
def caches(comps, tmp_path_factory) -> dict[int, InversionCache]:
    from ipfacediff.diffusion.branches import BranchSet

    d = tmp_path_factory.mktemp("bounded_inv")
    frames = moving_blob(48)
    return {n: InversionCache(invert_video(comps, BranchSet(base=comps.unet), frames[:n], d / f"{n}.safetensors", "a photo of a person",
                                           steps=2, progress=False)) for n in (16, 48)}


def edit(comps, cache, observer=None, prompt=PROMPT, **cfg):
    base = dict(steps=2, keyframe_interval=2, batch_size=3, pnp_attn_t=1.0, pnp_f_t=1.0)
    pipe = IPFaceDiffPipeline(comps, None, EditConfig(**{**base, **cfg}), progress=False)
    pipe.observer = observer
    return pipe(prompt, cache, method="ours", generator=torch.Generator().manual_seed(3), output_type="latent")


def test_bounded_with_one_group_is_exact_bit_for_bit(comps, caches):
    exact = edit(comps, caches[16], keyframe_attention="exact")
    auto = edit(comps, caches[16])  # tiny model: the exact state fits the default budget
    bounded = edit(comps, caches[16], keyframe_attention="bounded", keyframe_group_size=8)  # K = 8 keyframes
    for o in (auto, bounded):
        assert torch.equal(o.latents, exact.latents)
    info = bounded.info["keyframe_attention"]
    assert info["requested"] == "bounded" and info["used"] == "exact" and info["anchor_frames"] == []
    assert exact.info["keyframe_attention"]["used"] == "exact" and auto.info["keyframe_attention"]["requested"] == "auto"


class Recorder:
    """Observer: per step, the passes in order with what their attention saw (first layer's
    frame bookkeeping; every injected layer's keys)."""

    def __init__(self, first_layer: str, injected: set[str] = frozenset()):
        self.first, self.injected = first_layer, injected
        self.events: list[dict] = []
        self.max_state_bytes = 0

    def __call__(self, st, layer, q, k):
        held = {id(t.untyped_storage()): t.untyped_storage().nbytes()
                for d in (st.kf_features, *st.kf_outs, *st.anchor_kvs) for t in d.values()}
        self.max_state_bytes = max(self.max_state_bytes, sum(held.values()))
        if layer == self.first or (k is not None and st.inject_qk and layer in self.injected):
            self.events.append({"step": st.step, "role": st.role, "mode": st.mode, "layer": layer, "k": None if k is None else k.clone(),
                                "keyframes": None if st.keyframes is None else st.keyframes.tolist(), "carried": st.carried,
                                "plan": None if st.plan is None or st.mode != "propagate" else st.plan})


def first_self_attention(comps) -> str:
    from ipfacediff.diffusion.attention import self_attention_names

    return self_attention_names(comps.unet)[0][: -len(".processor")]


def test_keyframe_keys_are_own_group_then_anchors_and_propagation_uses_the_nearest_keyframes(comps, caches):
    G, A = 3, 2
    from ipfacediff.diffusion.injection import pnp_attention_layers

    rec = Recorder(first_self_attention(comps), pnp_attention_layers(comps.unet))
    out = edit(comps, caches[16], rec, keyframe_attention="bounded", keyframe_group_size=G, keyframe_anchors=A)
    info = out.info["keyframe_attention"]
    assert info["used"] == "bounded" and info["groups"] == 3 and info["anchor_frames"] == anchor_frames(16, A).tolist()
    groups = 2  # CFG halves
    for step, kf in enumerate(out.info["keyframes"]):
        ev = [e for e in rec.events if e["step"] == step]
        first = [e for e in ev if e["layer"] == rec.first]
        # pass order: anchors (source, edit), then per group its keyframes (source, edit) and propagations
        assert [(e["role"], e["mode"]) for e in first[:2]] == [("source", "anchors"), ("edit", "anchors")]
        assert first[0]["keyframes"] == info["anchor_frames"]
        kf_passes = [e for e in first if e["mode"] == "keyframes" and e["role"] == "edit"]
        own = [e["keyframes"][1:] if e["carried"] else e["keyframes"] for e in kf_passes]
        assert own == [kf[s : s + G] for s in range(0, len(kf), G)]  # contiguous groups of G, in order
        assert [e["carried"] for e in kf_passes] == [False, True, True]
        assert all(e["keyframes"][0] == kf[s - 1] for e, s in zip(kf_passes[1:], range(G, len(kf), G)))  # the carried one
        # every injected layer: keys = this group's source keys (per CFG half) followed by the anchors' keys
        anchor_k = {e["layer"]: e["k"] for e in ev if e["mode"] == "anchors" and e["role"] == "edit" and e["layer"] in rec.injected}
        src_k = [e for e in ev if e["mode"] == "keyframes" and e["role"] == "source" and e["layer"] in rec.injected]
        edit_k = [e for e in ev if e["mode"] == "keyframes" and e["role"] == "edit" and e["layer"] in rec.injected]
        assert len(anchor_k) > 0 and len(src_k) == len(edit_k) > 0
        for s, e in zip(src_k, edit_k):
            assert s["layer"] == e["layer"]
            n_own = len(s["k"])
            assert len(e["k"]) == groups * (n_own + A)
            assert torch.equal(e["k"], cat_groups(s["k"].repeat(groups, 1, 1), anchor_k[e["layer"]], groups))
        # propagated frames: blended from their true nearest past/future keyframes of this step
        props = [e for e in first if e["mode"] == "propagate" and e["role"] == "source"]
        seen = []
        for e in props:
            plan, held = e["plan"], torch.tensor(e["keyframes"])
            ref = blend_plan(plan.frames, torch.tensor(kf))
            assert held[plan.prev].tolist() == [kf[i] for i in ref.prev] and held[plan.next].tolist() == [kf[i] for i in ref.next]
            assert torch.equal(plan.w_prev, ref.w_prev)
            seen += plan.frames.tolist()
        assert sorted(seen) == sorted(set(range(16)) - set(kf))


def test_stored_keyframe_state_does_not_grow_with_video_length(comps, caches):
    """16 vs 48 frames (8 vs 24 keyframes per step): bounded holds the same bytes, exact 3x more."""
    held = {}
    for mode in ("exact", "bounded"):
        for n in (16, 48):
            rec = Recorder("none")
            edit(comps, caches[n], rec, keyframe_attention=mode, keyframe_group_size=2, keyframe_anchors=2)
            held[mode, n] = rec.max_state_bytes
    assert held["bounded", 16] == held["bounded", 48] > 0
    assert held["exact", 48] == 3 * held["exact", 16]
    assert held["bounded", 48] < held["exact", 48]


def test_more_anchors_than_frames_is_one_line_naming_the_parameter(comps, caches):
    with pytest.raises(InputError, match=r"^edit\.keyframe_anchors: 17 anchors but the video has only 16 frames$"):
        edit(comps, caches[16], keyframe_attention="bounded", keyframe_group_size=2, keyframe_anchors=17)
    with pytest.raises(InputError, match=r"^edit\.keyframe_memory_gib"):
        edit(comps, caches[16], keyframe_attention="bounded", keyframe_group_size=2, keyframe_memory_gib=1e-6)


def test_stored_state_estimate_matches_the_real_state(comps, caches):
    """Eq. (1) from the UNet config equals the bytes the exact pass really holds (tiny model)."""
    rec = Recorder("none")
    out = edit(comps, caches[16], rec, keyframe_attention="exact")
    K = len(out.info["keyframes"][0])
    shapes = self_attention_shapes(comps.unet.config, tuple(out.latents.shape[-2:]))
    assert rec.max_state_bytes == keyframe_state_bytes(shapes, K, groups=2, prompts=1, itemsize=4)
    assert out.info["keyframe_attention"]["estimated_exact_gib"] == round(rec.max_state_bytes / GIB, 4)
