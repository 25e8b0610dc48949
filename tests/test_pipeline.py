"""The editing pipeline end to end on tiny random models: propagation, determinism, streaming,
every frame kept, bad input, peak memory."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from ipfacediff.diffusion.attention import EditAttnProcessor
from ipfacediff.diffusion.branches import BranchSet
from ipfacediff.diffusion.inversion import InversionCache, invert_video
from ipfacediff.diffusion.models import PromptTruncationWarning, build_tiny, load_components
from ipfacediff.diffusion.pipeline import EditConfig, IPFaceDiffPipeline
from ipfacediff.errors import InputError

PROMPT = "a photo of a person wearing eyeglasses"


def moving_blob(n: int, size: int = 64) -> np.ndarray:
    """A bright disc drifting over a gradient: frames that differ smoothly in time."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    frames = []
    for i in range(n):
        cx, cy = 20 + 2.0 * i, 30 + np.sin(i / 3) * 6
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < 100).astype(np.float32)
        img = np.stack([xx * 3, yy * 3, 255 - xx * 2], -1) * (1 - disc[..., None]) + disc[..., None] * [250, 200, 40]
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edit_models") / "base"
    build_tiny(out, seed=0)
    return out


@pytest.fixture(scope="module")
def comps(models_dir):
    # float64: a random-weight UNet amplifies float32 round-off (which differs with batch size on CPU
    # kernels) to ~1e-3 within a few steps; in float64 exactness checks can be tight
    return load_components(models_dir, dtype="float64")


@pytest.fixture(scope="module")
def caches(comps, tmp_path_factory):
    from ipfacediff.diffusion.branches import BranchSet

    d = tmp_path_factory.mktemp("inversions")
    br = BranchSet(base=comps.unet)
    blob = invert_video(comps, br, moving_blob(13), d / "blob.safetensors", "a photo of a person", steps=4, progress=False)
    same = np.repeat(moving_blob(1), 10, axis=0)
    ident = invert_video(comps, br, same, d / "same.safetensors", "a photo of a person", steps=4, progress=False)
    return {"blob": InversionCache(blob), "same": InversionCache(ident)}


def pipe(comps, **cfg) -> IPFaceDiffPipeline:
    base = dict(steps=4, keyframe_interval=4, batch_size=4, guidance_scale=7.5)
    return IPFaceDiffPipeline(comps, None, EditConfig(**{**base, **cfg}), progress=False)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_every_frame_kept_and_keyframes_one_per_interval(comps, caches):
    out = pipe(comps)(PROMPT, caches["blob"], method="ours", generator=seeded())
    assert out.frames.shape == (13, 64, 64, 3)  # 13 is not a multiple of 8 or 4: nothing trimmed
    assert len(out.info["keyframes"]) == 4  # re-drawn at each of the 4 steps
    for kf in out.info["keyframes"]:
        assert [k // 4 for k in kf] == [0, 1, 2, 3]
    assert out.info["injected_steps"] == {"qk": 2, "resblock": 3}


def test_same_seed_same_output_and_seed_drives_keyframes(comps, caches):
    p = pipe(comps)
    a = p(PROMPT, caches["blob"], generator=seeded(5))
    b = p(PROMPT, caches["blob"], generator=seeded(5))
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)
    c = p(PROMPT, caches["blob"], generator=seeded(6))
    assert c.info["keyframes"] != a.info["keyframes"]
    assert not torch.equal(a.latents, c.latents)


def streamed_steps(comps, cache, batch_size: int, seed: int, method: str = "ours", output_type: str = "latent"):
    """Edit with `batch_size`; per step the edit latents x_i the pipeline fed its UNet, then the result."""
    from engine_reference import PipelineRecorder

    p = pipe(comps, batch_size=batch_size)
    rec = PipelineRecorder([comps.unet], layers=set())
    p.observer = rec.observe
    try:
        out = p(PROMPT, cache, generator=seeded(seed), method=method, output_type=output_type)
    finally:
        rec.remove()
    steps = rec.per_step(cache.n_frames, out.info["keyframes"], len(out.info["timesteps"]))
    return out, [s["x"] for s in steps[1:]] + [out.latents]  # x_1 .. x_N: the state after each step


# Batch sizes 2 and 16 run the same float64 maths on differently shaped batches (BLAS blocking,
# SDPA chunks), so they differ by round-off only: <= n u per dot product (n <= 576 terms, u = 1.1e-16),
# i.e. 6e-14 relative per layer. Worst case for the first step: ~60 layers deep, guidance multiplying eps
# differences by 2g + 1 = 16, |eps| ~ 3: 60 x 6e-14 x 16 x 3 = 1.7e-10 on x_1, hence STREAM_TOL_0 = 2e-10
# (measured 1.1e-12). The random-weight UNet then amplifies the difference from step to step (the
# Jacobian of the toy model, not the CPU): measured after steps 1..4 1.1e-12, 3.1e-11, 1.3e-9, 1.7e-8
# (AMD EPYC, 1 and 2 threads; 29x, 41x, 13x; issue 8 saw up to 70x), so the bound grows by
# STREAM_GROWTH = 100 per step: 2e-10, 2e-8, 2e-6, 2e-4. A seam between batches (a frame propagated
# from the wrong keyframe, with another batch's correspondences or eq. 4 weights) changes x_1 by > 1e-3:
# the first-step bound is what catches it; the later ones only have to hold.
STREAM_TOL_0, STREAM_GROWTH = 2e-10, 100.0


def test_streaming_batch_size_does_not_change_the_edit(comps, caches):
    """Frames are processed batch by batch; the result must not depend on the batch size (no seams)."""
    a, xa = streamed_steps(comps, caches["blob"], 2, seed=1)
    b, xb = streamed_steps(comps, caches["blob"], 16, seed=1)
    assert a.info["keyframes"] == b.info["keyframes"]
    diffs = [(p - q).abs().max().item() for p, q in zip(xa, xb)]
    assert len(diffs) == 4
    for i, d in enumerate(diffs):
        assert d < STREAM_TOL_0 * STREAM_GROWTH**i, (i + 1, diffs)


@pytest.mark.parametrize("method", ["ours", "tokenflow", "per_frame"])
def test_identical_frames_edit_to_identical_frames(comps, caches, method):
    """Identical frames go through the same maths in differently shaped batches (keyframes, then
    batches of others): equal up to round-off, bounded per step as in the streaming test below
    (measured 2.6e-12 after step 4, AMD EPYC, 1 and 2 threads). A propagation or injection error
    that treats frames differently moves x_1 by > 1e-3."""
    cache = caches["same"]
    assert torch.equal(cache.latents(0)[0], cache.latents(0)[-1])  # the inversion is per-frame identical
    out, xs = streamed_steps(comps, cache, 4, seed=0, method=method, output_type="np")
    for i, x in enumerate(xs):
        assert (x - x[:1]).abs().max().item() < STREAM_TOL_0 * STREAM_GROWTH**i, i
    assert np.abs(out.frames.astype(int) - out.frames[:1].astype(int)).max() <= 1  # rounding at .5 only
    assert out.frames.shape == (10, 64, 64, 3)


def test_propagated_attention_is_eq4_blend_of_keyframe_outputs_via_source_correspondences(comps, caches):
    """End to end at one decoder layer and step 1: every non-keyframe's self-attention output in the
    edit pass equals the eq. 4 blend of its past/future keyframes' joint-attention outputs, gathered at
    the tokens nearest (cosine) in the SOURCE pass's features; recomputed here from hooks. (At step 1
    the edit latents have left the inverted ones, so source and edit features differ: asserted.)"""
    layer, step = "up_blocks.2.attentions.1.transformer_blocks.0.attn1", 1
    seen, now = {}, {}
    p = pipe(comps, batch_size=16)  # one propagation batch holds every non-keyframe
    p.observer = lambda st, name, q, k: now.update(key=(st.step, st.mode, st.role))

    def record(module, args, output):  # first batch of each pass; returns None: output untouched
        seen.setdefault(now["key"], (args[0].clone(), output.clone()))

    hook = comps.unet.get_submodule(layer).register_forward_hook(record)
    try:
        out = p(PROMPT, caches["blob"], generator=seeded(2))
    finally:
        hook.remove()
    kf = out.info["keyframes"][step]
    rest = [f for f in range(13) if f not in kf]
    f_kf, _ = seen[(step, "keyframes", "source")]
    _, a_kf = seen[(step, "keyframes", "edit")]
    f_b, _ = seen[(step, "propagate", "source")]
    e_b, o_b = seen[(step, "propagate", "edit")]
    assert not torch.allclose(e_b[: len(rest)], f_b, atol=1e-3)  # edit features would give other matches
    a_kf, o_b = a_kf.view(2, len(kf), *a_kf.shape[1:]), o_b.view(2, len(rest), *o_b.shape[1:])
    unit = lambda t: t / t.norm(dim=-1, keepdim=True)  # noqa: E731
    for b, f in enumerate(rest):
        past = [k for k in kf if k < f]
        future = [k for k in kf if k > f]
        p_kf, n_kf = (past or future)[-1 if past else 0], (future or past)[0 if future else -1]
        d_p, d_n = f - p_kf, n_kf - f
        w_p, w_n = (1.0, 0.0) if p_kf == n_kf else (d_n / (d_p + d_n), d_p / (d_p + d_n))
        i_p, i_n = kf.index(p_kf), kf.index(n_kf)
        nn_p = (unit(f_b[b]) @ unit(f_kf[i_p]).T).argmax(-1)
        nn_n = (unit(f_b[b]) @ unit(f_kf[i_n]).T).argmax(-1)
        expect = w_p * a_kf[:, i_p, nn_p] + w_n * a_kf[:, i_n, nn_n]
        assert torch.allclose(o_b[:, b], expect, atol=1e-10), f


def test_methods_differ_and_record_their_branches(comps, caches):
    # each method's maths (branches, injection, propagation) is checked step by step against the float64
    # reference in test_engine_reference.py; this checks what the output records
    outs = {m: pipe(comps)(PROMPT, caches["blob"], method=m, generator=seeded()) for m in ("ours", "no_id_guidance", "per_frame")}
    assert not torch.allclose(outs["ours"].latents, outs["no_id_guidance"].latents)  # injection matters
    assert not torch.allclose(outs["ours"].latents, outs["per_frame"].latents)  # propagation matters
    assert outs["ours"].info["branches"] == {"source": "base", "edit": "base"}  # no branch folders given
    assert outs["per_frame"].info["keyframes"] == []


def test_frames_subset_and_processors_restored(comps, caches):
    p = pipe(comps)
    out = p(PROMPT, caches["blob"], frames=[0, 1, 2, 5, 6], generator=seeded())
    assert out.frames.shape[0] == 5 and out.info["frames"] == [0, 1, 2, 5, 6]
    assert not any(isinstance(x, EditAttnProcessor) for x in comps.unet.attn_processors.values())
    assert not comps.unet.up_blocks[1].resnets[1].conv2._forward_hooks


def test_empty_prompt_rejected(comps, caches):
    for bad in ("", "   "):
        with pytest.raises(InputError, match="empty prompt"):
            pipe(comps)(bad, caches["blob"])


def test_long_prompt_truncated_with_warning_naming_dropped_words(comps, caches):
    long = "a photo of a person with " + ", ".join(["red glasses"] * 30) + ", and a zebra moustache"
    with pytest.warns(PromptTruncationWarning, match="zebra moustache"):
        out = pipe(comps)(long, caches["blob"], frames=[0, 1], generator=seeded())
    assert "zebra moustache" in out.info["prompt_truncated"]


def test_several_edits_in_one_prompt_run_in_one_pass(comps, caches):
    out = pipe(comps)("add bangs, sunglasses and a French beard", caches["blob"], frames=[0, 1, 2], generator=seeded())
    assert out.info["prompt"] == "add bangs, sunglasses and a French beard" and out.info["prompt_truncated"] == ""


def test_cache_with_other_steps_rejected(comps, caches):
    with pytest.raises(InputError, match="re-run inversion"):
        pipe(comps)(PROMPT, caches["blob"], num_inference_steps=5)


def test_unknown_method_and_bad_config_rejected(comps, caches):
    with pytest.raises(InputError, match="unknown edit method"):
        pipe(comps)(PROMPT, caches["blob"], method="dva")
    with pytest.raises(InputError, match="batch_size"):
        EditConfig(batch_size=0)


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensor storage allocated by aten ops while active and still referenced from Python, and
    their peak: a deterministic measure of what an edit holds (RSS moves with allocator caching and
    page faults). A storage counts from the op that allocated it (an output sharing no input's storage)
    until the last tensor seen on it is gone. Buffers internal to one kernel are not seen: this measures
    the tensors that live between ops, which is what streaming bounds."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.storages: dict[int, list[int]] = {}  # data_ptr -> [nbytes, tensors alive on it]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            ptr = t.untyped_storage().data_ptr()
            entry = self.storages.get(ptr)
            if entry is None:
                if ptr == 0 or ptr in inputs:  # empty, or a view/in-place result of a storage made elsewhere
                    continue
                entry = self.storages[ptr] = [t.untyped_storage().nbytes(), 0]
                self.live += entry[0]
                self.peak = max(self.peak, self.live)
            entry[1] += 1
            weakref.finalize(t, self._release, ptr)
        return out

    def _release(self, ptr: int) -> None:
        entry = self.storages[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self.storages[ptr]


def per_keyframe_state_bytes(unet, size: int) -> int:
    """Upper bound of what the edit keeps per keyframe for a step: at every self-attention layer its
    source features (S x C), its joint-attention outputs in both CFG halves (2 S C), the injected source
    q and k (2 S C) and their copies for both CFG halves (4 S C): 9 S C, float32; plus the injected
    resblock features in both halves (3 x their size). Layer sizes read from the model at `size` px."""
    shapes, handles = [], []
    for name, m in unet.named_modules():
        if name.endswith(".attn1"):
            handles.append(m.register_forward_hook(lambda mod, a, o: shapes.append(a[0].shape[1] * a[0].shape[2])))
    res = []
    handles.append(unet.get_submodule("up_blocks.1.resnets.1").register_forward_hook(lambda mod, a, o: res.append(o[0].numel())))
    with torch.no_grad():
        unet(torch.zeros(1, 4, size // 8, size // 8), 1, encoder_hidden_states=torch.zeros(1, 77, unet.config.cross_attention_dim))
    for h in handles:
        h.remove()
    return 4 * (9 * sum(shapes) + 3 * res[0])


def edit_peak(comps, cache, batch_size: int) -> int:
    p = IPFaceDiffPipeline(comps, None, EditConfig(steps=2, keyframe_interval=8, batch_size=batch_size), progress=False)
    with LiveTensorBytes() as mem:
        p(PROMPT, cache, generator=seeded(0), output_type="latent")
    return mem.peak


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_video_length(models_dir, tmp_path):
    """Tensor memory an edit holds (LiveTensorBytes: deterministic) for 32 vs 16 frames of 128 px may
    grow only by what is per frame or per keyframe by design: the edit latents of every frame (x and
    the next x: 2 x 4 x 16 x 16 float32 = 8 KiB per frame, counted 3x for the step's scratch copies)
    and the keyframes' per-layer state (per_keyframe_state_bytes; 2 more keyframes at interval 8). The
    UNet's activations must not grow: they are streamed in batches of 4. The same measurement of a
    non-streaming edit (one batch holding every frame) must exceed that allowance, or the test could
    not see the growth it rules out."""
    comps = load_components(models_dir)
    caches = {}
    for n in (16, 32):
        path = invert_video(comps, BranchSet(base=comps.unet), moving_blob(n, 128), tmp_path / f"v{n}.safetensors", "",
                            steps=2, progress=False)
        caches[n] = InversionCache(path)
    allowance = 16 * 3 * (2 * 4 * 16 * 16 * 4) + 2 * per_keyframe_state_bytes(comps.unet, 128)
    streamed = edit_peak(comps, caches[32], 4) - edit_peak(comps, caches[16], 4)
    unbatched = edit_peak(comps, caches[32], 32) - edit_peak(comps, caches[16], 16)
    assert streamed <= allowance, (streamed, allowance)
    assert unbatched > 2 * allowance, (unbatched, allowance)  # the measurement sees activation growth
