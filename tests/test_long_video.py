"""Long videos and many prompts: feed-forward chunking in the keyframe pass, one source pass shared by
several prompts (tiny models, float64)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ipfacediff.diffusion.branches import BranchSet
from ipfacediff.diffusion.inversion import InversionCache, invert_video
from ipfacediff.diffusion.models import build_tiny, load_components
from ipfacediff.diffusion.pipeline import EditConfig, IPFaceDiffPipeline, feed_forward_chunks, largest_divisor_at_most
from ipfacediff.diffusion.timing import synthetic_frames
from ipfacediff.errors import InputError


def test_largest_divisor_at_most():
    assert largest_divisor_at_most(300, 16) == 15
    assert largest_divisor_at_most(74, 16) == 2  # 2 x 37
    assert largest_divisor_at_most(37, 16) == 1
    assert largest_divisor_at_most(8, 16) == 8


def test_ff_chunk_must_not_be_negative():
    with pytest.raises(InputError, match="ff_chunk"):
        EditConfig(ff_chunk=-1)


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory):
    d = tmp_path_factory.mktemp("lv")
    build_tiny(d / "base", seed=0)
    comps = load_components(d / "base", "cpu", torch.float64)
    cache = invert_video(comps, BranchSet(base=comps.unet), synthetic_frames(20, 64), d / "v.safetensors", "", steps=2, progress=False)
    return comps, InversionCache(cache)


def test_feed_forward_chunks_set_and_restore(tiny64):
    comps, _ = tiny64
    blocks = [m for m in comps.unet.modules() if hasattr(m, "set_chunk_feed_forward")]
    with feed_forward_chunks(comps.unet, 6, 4):
        assert {b._chunk_size for b in blocks} == {3} and {b._chunk_dim for b in blocks} == {0}
    assert {b._chunk_size for b in blocks} == {None}
    with feed_forward_chunks(comps.unet, 6, 0):  # 0: off
        assert {b._chunk_size for b in blocks} == {None}


@pytest.mark.slow
def test_chunked_keyframe_pass_edits_like_the_whole_batch(tiny64):
    """20 frames -> 3 keyframes: edit batch 6 in chunks of 2 (ff_chunk=2) against all at once.
    Feed-forward acts per token, so only the grouping of rows in the matmuls differs; in float64 that
    can change a product's rounding by ~1e-16 relative, and two steps of a small random UNet amplify
    it by far less than 1e6: 1e-10 on latents of unit scale is a bound with room to spare."""
    comps, cache = tiny64
    base = EditConfig(steps=2, methods=["ours"], ff_chunk=0)
    out = {}
    for ff in (0, 2):
        pipe = IPFaceDiffPipeline(comps, None, dataclasses.replace(base, ff_chunk=ff), progress=False)
        out[ff] = pipe("glasses", cache, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert out[2].info["ff_chunk"] == 2 and out[2].info["keyframes"] == out[0].info["keyframes"]
    torch.testing.assert_close(out[2].latents, out[0].latents, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_several_prompts_share_the_source_pass_and_match_separate_runs(tiny64):
    """Each prompt's edit pass is the same call on the same inputs as in a run of its own (same
    keyframe draws from the same seed, same source-pass features): the latents are bit-identical,
    no tolerance needed. The source pass runs once per frame batch instead of once per prompt."""
    comps, cache = tiny64
    prompts = ["glasses", "an old man", "a beard"]
    calls = []
    pipe = IPFaceDiffPipeline(comps, None, EditConfig(steps=2, methods=["ours"]), progress=False)
    hook = comps.unet.register_forward_pre_hook(lambda m, a, kw: calls.append(len(a[0])), with_kwargs=True)
    try:
        joint = pipe(prompts, cache, generator=torch.Generator().manual_seed(0), output_type="latent")
        n_joint = len(calls)
        calls.clear()
        alone = [pipe(p, cache, generator=torch.Generator().manual_seed(0), output_type="latent") for p in prompts]
    finally:
        hook.remove()
    assert [o.info["prompt"] for o in joint] == prompts and joint[0].info["prompts_sharing_source_pass"] == 3
    for j, a in zip(joint, alone):
        assert torch.equal(j.latents, a.latents) and j.info["keyframes"] == a.info["keyframes"]
    # per frame batch: 1 source + 3 edit calls together, 3 x (1 + 1) apart (text encoder not hooked)
    assert n_joint * 6 == len(calls) * 4


def test_empty_prompt_list_is_an_input_error(tiny64):
    comps, cache = tiny64
    with pytest.raises(InputError, match="no prompt"):
        IPFaceDiffPipeline(comps, None, EditConfig(steps=1), progress=False)([], cache)
