"""The editing pipeline end to end on tiny random models: propagation, determinism, streaming,
every frame kept, bad input, peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ipfacediff.diffusion.attention import EditAttnProcessor
from ipfacediff.diffusion.inversion import InversionCache, invert_video
from ipfacediff.diffusion.models import PromptTruncationWarning, build_tiny, load_components
from ipfacediff.diffusion.pipeline import EditConfig, IPFaceDiffPipeline
from ipfacediff.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
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


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import numpy as np, torch
    sys.path.insert(0, {test_dir!r})
    from test_pipeline import moving_blob
    from ipfacediff.diffusion.branches import BranchSet
    from ipfacediff.diffusion.inversion import InversionCache, invert_video
    from ipfacediff.diffusion.models import load_components
    from ipfacediff.diffusion.pipeline import EditConfig, IPFaceDiffPipeline

    torch.set_num_threads(1)
    n, batch, models, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
    comps = load_components(models)
    frames = moving_blob(n, 128)
    path = invert_video(comps, BranchSet(base=comps.unet), frames, f"{{work}}/v{{n}}.safetensors", "", steps=2, progress=False)
    cache = InversionCache(path)
    pipe = IPFaceDiffPipeline(comps, None, EditConfig(steps=2, keyframe_interval=8, batch_size=batch), progress=False)
    pipe("warm up", cache, frames=list(range(min(n, 2 * batch + 1))), generator=torch.Generator().manual_seed(0))
    base, peak, done = rss(), [0], [False]
    def sample():
        while not done[0]:
            peak[0] = max(peak[0], rss())
            time.sleep(0.0005)
    th = threading.Thread(target=sample); th.start()
    pipe("a photo of a person wearing eyeglasses", cache, generator=torch.Generator().manual_seed(0))
    done[0] = True; th.join()
    print(json.dumps({{"n": n, "delta": max(peak[0], rss()) - base}}))
    """
)


def peak_delta(n: int, batch: int, models_dir: Path, work: Path) -> int:
    script = MEMORY_SCRIPT.format(test_dir=str(Path(__file__).parent))
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", script, str(n), str(batch), str(models_dir), str(work)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])["delta"]


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_video_length(models_dir, tmp_path):
    """Peak RSS growth of an edit (over the loaded models, measured in a fresh subprocess) for 2x
    the frames stays within 1.2x: UNet work is streamed in batches, only small latents are held."""
    # RSS rises here are a few MiB, so allocator/page-fault noise of ~2-3 MiB is real: allow 4 MiB slack
    # and, on a miss, re-measure once and keep the lower peak (noise only ever adds). A non-streaming
    # editor measured 35 MiB vs 9.7 MiB here: still far outside the bound.
    d16 = peak_delta(16, 4, models_dir, tmp_path)
    bound = 1.2 * d16 + (4 << 20)
    d32 = peak_delta(32, 4, models_dir, tmp_path)
    if d32 > bound:
        d32 = min(d32, peak_delta(32, 4, models_dir, tmp_path))
    assert d32 <= bound, (d16, d32)
