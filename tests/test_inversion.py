"""DDIM inversion: the update against references, reconstruction on a real clip, the cache file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ipfacediff.diffusion import inversion as I
from ipfacediff.diffusion import models as M
from ipfacediff.diffusion.branches import BranchSet, load_branches, lora_config, save_branch
from ipfacediff.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models are latency-bound: one thread is as fast and immune to an oversubscribed machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    out = tmp_path_factory.mktemp("inv_models") / "base"
    M.build_tiny(out, seed=0)
    return M.load_components(out)


@pytest.fixture(scope="module")
def clip_frames(media_dir) -> np.ndarray:
    """12 frames of a real talking-head clip, a 200 px square around the face resized to 64 px."""
    import cv2

    from ipfacediff.video import iter_frames

    frames = []
    for f in iter_frames(media_dir / "videos" / "grid_bbaf2n.mpg", max_frames=12):
        x = (f.shape[1] - 200) // 2
        frames.append(cv2.resize(f[20:220, x : x + 200], (64, 64), interpolation=cv2.INTER_AREA))
    return np.stack(frames)


class GaussianDenoiser(torch.nn.Module):
    """The exact noise prediction for Gaussian data N(mean, var): a smooth ODE whose DDIM inversion converges.

    Same call signature as a UNet; isolates the inversion/cache/sampling machinery from random weights.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, var: float, mean: float = 0.0):
        super().__init__()
        self.register_buffer("acp", alphas_cumprod.double())
        self.var, self.mean = var, mean

    dtype = torch.float32

    @property
    def device(self):
        return self.acp.device

    def forward(self, x, t, encoder_hidden_states=None):
        a = self.acp[t].view(-1, 1, 1, 1)
        out = ((1 - a).sqrt() * (x.double() - a.sqrt() * self.mean) / (a * self.var + 1 - a)).float()
        return type("Out", (), {"sample": out})()


def test_ddim_step_matches_float64_reference():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    for a_from, a_to in [(0.0140, 0.0365), (0.9991, 0.9983), (0.5, 0.2)]:
        # DDIM (Song et al. 2021, eq. 12, sigma 0), element by element in numpy float64
        xn, en = x.numpy(), eps.numpy()
        ref = np.sqrt(a_to) * (xn - np.sqrt(1 - a_from) * en) / np.sqrt(a_from) + np.sqrt(1 - a_to) * en
        assert np.allclose(I.ddim_step(x, eps, a_from, a_to).numpy(), ref, rtol=0, atol=1e-12)
        # float32 inputs: within float32 rounding (values ~1, amplified by at most 1/sqrt(a) ~ 8.5)
        assert np.allclose(I.ddim_step(x.float(), eps.float(), a_from, a_to).double().numpy(), ref, atol=1e-5)
        # with the same noise the step is exactly invertible
        back = I.ddim_step(I.ddim_step(x, eps, a_from, a_to), eps, a_to, a_from)
        assert torch.allclose(back, x, atol=1e-12)


def test_schedule_and_steps_match_diffusers(comps):
    from diffusers import DDIMInverseScheduler

    timesteps, alphas = I.ddim_schedule(comps.new_scheduler(), 10)
    assert timesteps == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]  # steps_offset=1, "leading"
    assert alphas[-1] == pytest.approx(float(comps.scheduler.alphas_cumprod[0]))  # set_alpha_to_one=False
    g = torch.Generator().manual_seed(0)
    x0, cond = torch.randn(2, 4, 8, 8, generator=g) * 0.5, M.encode_prompt(comps, ["a face"])
    states = I.invert_latents(comps.unet, x0, cond, timesteps, alphas)
    assert len(states) == 11 and torch.equal(states[-1], x0)
    # each step with the tiny UNet's noise == diffusers' DDIMInverseScheduler / DDIMScheduler step
    inv, fwd = DDIMInverseScheduler.from_config(comps.scheduler.config), comps.new_scheduler()
    inv.set_timesteps(10)
    fwd.set_timesteps(10)
    assert [int(t) for t in inv.timesteps] == timesteps[::-1]
    for i, t in enumerate(timesteps):
        x = states[i + 1]
        eps = comps.unet(x, t, cond.expand(2, -1, -1)).sample
        assert torch.allclose(inv.step(eps, t, x).prev_sample, I.ddim_step(x, eps, alphas[i + 1], alphas[i]), atol=1e-5)
        eps = comps.unet(states[i], t, cond.expand(2, -1, -1)).sample
        assert torch.allclose(fwd.step(eps, t, states[i]).prev_sample, I.ddim_step(states[i], eps, alphas[i], alphas[i + 1]), atol=1e-5)
    # whole trajectories with a well-conditioned denoiser (the random UNet amplifies float32 rounding)
    den = GaussianDenoiser(comps.scheduler.alphas_cumprod, 0.25)
    x = x0.clone()
    for t in inv.timesteps:
        x = inv.step(den(x, t).sample, t, x).prev_sample
    gstates = I.invert_latents(den, x0, cond, timesteps, alphas)
    assert torch.allclose(x, gstates[0], atol=1e-5)
    x = gstates[0].clone()
    for t in fwd.timesteps:
        x = fwd.step(den(x, t).sample, t, x).prev_sample
    assert torch.allclose(x, I.sample_latents(den, gstates[0], cond, timesteps, alphas), atol=1e-5)


@pytest.mark.media
def test_inversion_reconstructs_real_clip(comps, clip_frames, tmp_path):
    """Inversion -> cache -> DDIM sampling back (no guidance, no edit) returns the clip's latents.

    With the exact denoiser for Gaussian data (fitted to the clip's latent mean/variance) the error is
    the DDIM discretisation error: relative latent error below 0.15 at 10 steps and 0.04 at 50 (measured
    0.091 / 0.023), shrinking with steps. Decoded images match within 0.1 (of the [-1, 1] range) at 50.
    """
    x0 = M.encode_images(comps, M.uint8_to_tensor(clip_frames))
    den = GaussianDenoiser(comps.scheduler.alphas_cumprod, var=float(x0.var()), mean=float(x0.mean()))
    branches = BranchSet(base=den)
    errors = {}
    for steps in (10, 50):
        path = I.invert_video(comps, branches, clip_frames, tmp_path / f"clip{steps}.safetensors", "a man talking", steps, batch_size=5)
        cache = I.InversionCache(path)
        assert torch.allclose(cache.x0(), x0, atol=1e-6)  # latents_N is the clean latent
        cond = M.encode_prompt(comps, [cache.prompt])
        rec = I.sample_latents(den, cache.latents(0), cond, cache.timesteps, cache.alphas)
        errors[steps] = float((rec - x0).norm() / x0.norm())
    assert errors[10] < 0.15 and errors[50] < 0.04
    assert errors[50] < 0.4 * errors[10]  # converges with steps (measured ratio 0.25)
    images = (M.decode_latents(comps, rec) - M.decode_latents(comps, x0)).abs().max()
    assert images < 0.1


@pytest.mark.media
def test_tiny_unet_cache_roundtrip_and_measured_error(comps, clip_frames, tmp_path):
    """With the random-weight UNet the cache stores exactly the in-memory DDIM states.

    Its reconstruction error is large and shrinks only slowly with steps (an untrained UNet is no
    denoiser: its probability-flow ODE is ill-conditioned); measured relative latent error on this clip
    1.2 / 1.0 / 0.81 / 0.64 at 10 / 50 / 100 / 200 steps. So only finiteness is required here: the
    sample profile's reconstructions are not meaningful, the paper profile's are.
    """
    frames = clip_frames[:6]
    path = I.invert_video(comps, BranchSet(base=comps.unet), frames, tmp_path / "v.safetensors", "", 10, batch_size=4)
    cache = I.InversionCache(path)
    x0 = M.encode_images(comps, M.uint8_to_tensor(frames))
    cond = M.encode_prompt(comps, [""])
    parts = [I.invert_latents(comps.unet, x0[sl], cond, cache.timesteps, cache.alphas) for sl in (slice(0, 4), slice(4, 6))]
    for i in range(11):  # same batches (4 + 2 frames) as invert_video: bit-identical
        assert torch.equal(cache.latents(i), torch.cat([parts[0][i], parts[1][i]])), i
    rec = I.sample_latents(comps.unet, cache.latents(0), M.encode_prompt(comps, [""]), cache.timesteps, cache.alphas)
    assert torch.isfinite(rec).all()


def test_cache_file_is_standard_safetensors_with_partial_reads(comps, tmp_path):
    from safetensors.torch import load_file

    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (7, 64, 64, 3), dtype=torch.uint8, generator=g).numpy()
    for store in ("float32", "float16"):
        path = I.invert_video(
            comps, BranchSet(base=comps.unet), frames, tmp_path / f"{store}.safetensors", "x", 3, batch_size=3, store_dtype=store
        )
        full = load_file(str(path))  # the reference reader accepts our preallocated layout
        assert sorted(full) == [f"latents_{i}" for i in range(4)]
        assert full["latents_0"].dtype == M.resolve_dtype(store) and full["latents_0"].shape == (7, 4, 8, 8)
        cache = I.InversionCache(path)
        assert cache.n_frames == 7 and cache.steps == 3 and cache.verify()
        for idx in ([0, 1, 2], [6, 0, 3, 4], [5]):
            assert torch.equal(cache.latents(1, idx), full["latents_1"][idx].float())
        assert torch.equal(cache.latents(2, slice(2, 5)), full["latents_2"][2:5].float())
        with pytest.raises(IndexError):
            cache.latents(1, [7])
        with pytest.raises(IndexError):
            cache.latents(4)


def test_cache_reuse_corruption_and_staleness(comps, tmp_path, caplog):
    g = torch.Generator().manual_seed(2)
    frames = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8, generator=g).numpy()
    br = BranchSet(base=comps.unet)
    path = I.invert_video(comps, br, frames, tmp_path / "v.safetensors", "", 3, batch_size=2)
    good = path.read_bytes()
    stamp = path.stat().st_mtime_ns
    I.invert_video(comps, br, frames, path, "", 3, batch_size=2)
    assert path.stat().st_mtime_ns == stamp  # valid entry reused, not rewritten

    def corrupt(data: bytes) -> None:
        path.write_bytes(data)
        I.invert_video(comps, br, frames, path, "", 3, batch_size=2)
        assert path.read_bytes() == good  # detected and recomputed identically (deterministic)

    flipped = bytearray(good)
    flipped[-100] ^= 0xFF
    corrupt(bytes(flipped))  # bit rot in the data: caught by data_sha256
    assert "hash mismatch" in caplog.text
    corrupt(good[: len(good) // 2])  # truncated
    corrupt(b"not a safetensors file")
    # stale: other steps, prompt, frames -> recomputed with the new metadata
    I.invert_video(comps, br, frames, path, "", 4, batch_size=2)
    assert I.InversionCache(path).steps == 4 and "stale inversion (alphas, steps, timesteps" in caplog.text
    I.invert_video(comps, br, frames, path, "a face", 4, batch_size=2)
    assert I.InversionCache(path).prompt == "a face"
    frames[0, 0, 0, 0] ^= 1
    I.invert_video(comps, br, frames, path, "a face", 4, batch_size=2)
    assert I.InversionCache(path).meta["frames_sha256"] == I.frames_digest(frames)[0]
    with pytest.raises(InputError, match="corrupt inversion cache"):
        path.write_bytes(b"garbage")
        I.InversionCache(path)
    with pytest.raises(InputError, match="not found"):
        I.InversionCache(tmp_path / "absent.safetensors")


def test_failure_leaves_nothing_behind(comps, tmp_path):
    class Boom(torch.nn.Module):
        dtype, device = torch.float32, torch.device("cpu")

        def forward(self, *a, **k):
            raise RuntimeError("out of memory")

    frames = np.zeros((3, 64, 64, 3), np.uint8)
    with pytest.raises(RuntimeError):
        I.invert_video(comps, BranchSet(base=Boom()), frames, tmp_path / "v.safetensors", "", 2)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="multiple of 8"):
        I.invert_video(comps, BranchSet(base=comps.unet), np.zeros((2, 60, 64, 3), np.uint8), tmp_path / "w.safetensors", "", 2)
    assert list(tmp_path.iterdir()) == []


def test_identity_branch_is_used(comps, tmp_path):
    """A LoRA identity branch changes the inversion and its cache key; the directional one does not."""
    import copy

    unet = copy.deepcopy(comps.unet)
    unet.add_adapter(lora_config(4), adapter_name="identity")
    torch.manual_seed(0)
    for n, p in unet.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)  # gaussian init leaves B = 0 (a no-op adapter)
    save_branch(unet, tmp_path / "identity", "identity", "lora")
    base = copy.deepcopy(comps.unet)
    branches = load_branches(base, {"identity": tmp_path / "identity", "directional": None})
    frames = np.full((2, 64, 64, 3), 128, np.uint8)
    frames[:, 16:48, 16:48] = 30
    with_id = I.InversionCache(I.invert_video(comps, branches, frames, tmp_path / "a.safetensors", "", 3))
    plain = I.InversionCache(I.invert_video(comps, BranchSet(base=comps.unet), frames, tmp_path / "b.safetensors", "", 3))
    assert with_id.meta["branch"].startswith("lora:") and plain.meta["branch"] == "base"
    assert torch.equal(with_id.x0(), plain.x0())  # same VAE latents
    assert not torch.allclose(with_id.latents(0), plain.latents(0), atol=1e-3)


def test_video_prompts(tmp_path):
    vids = ["a", "b"]
    missing = tmp_path / "none.jsonl"
    assert I.video_prompts(missing, vids) == {v: ("", "empty (no caption file)") for v in vids}
    assert I.video_prompts(missing, vids, "fixed")["a"] == ("fixed", "params invert.prompt")
    f = tmp_path / "videos.jsonl"
    f.write_text(json.dumps({"video": "a", "caption": "a man smiling", "source": "fallback"}) + "\n\n")
    got = I.video_prompts(f, vids)
    assert got["a"][0] == "a man smiling" and got["b"] == ("", "empty (video not captioned)")
    f.write_text("{broken\n")
    with pytest.raises(InputError, match="line 1"):
        I.video_prompts(f, vids)


@pytest.mark.media
def test_invert_stage(comps, clip_frames, tmp_path):
    import importlib.util

    import yaml

    from ipfacediff.face.prep import write_png

    spec = importlib.util.spec_from_file_location("stage_invert", ROOT / "stages" / "invert.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    models = tmp_path / "models"
    M.build_tiny(models / "base", seed=0)
    for vid, sl in (("v1", slice(0, 4)), ("v2", slice(4, 9))):
        (tmp_path / "prepped" / vid / "crops").mkdir(parents=True)
        for k, f in enumerate(clip_frames[sl]):
            write_png(tmp_path / "prepped" / vid / "crops" / f"{k:06d}.png", f)
        frames = len(clip_frames[sl])  # a prepped video is crops/ + meta.json
        (tmp_path / "prepped" / vid / "meta.json").write_text(json.dumps({"fps": "10/1", "frames": frames}))
    (tmp_path / "captions.jsonl").write_text(json.dumps({"video": "v1", "caption": "a man", "source": "t"}) + "\n")
    params = {"profile": "sample", "seed": 0, "device": "cpu", "wandb": {"mode": "disabled"},
              "models": {"source": "tiny", "clip": None, "dtype": "float32"}, "invert": {"steps": 3, "prompt": "", "batch_size": 4}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "inv"
    (out).mkdir()
    (out / "gone.safetensors").write_bytes(b"old video no longer prepped")
    argv = ["--params", str(tmp_path / "params.yaml"), "--prepped", str(tmp_path / "prepped"), "--models", str(models / "base"),
            "--branch", str(models / "branches" / "identity"), "--captions", str(tmp_path / "captions.jsonl"), "--out", str(out)]
    assert stage.main(argv) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["profile"] == "sample" and index["models"]["weights"] == "random" and index["identity_branch"] == "base"
    assert index["videos"]["v1"]["prompt"] == "a man" and index["videos"]["v2"]["prompt_source"] == "empty (video not captioned)"
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["v1.safetensors", "v2.safetensors"]
    assert I.InversionCache(out / "v2.safetensors").n_frames == 5
    # the crops are what was inverted (PNG round trip is lossless)
    assert I.InversionCache(out / "v1.safetensors").meta["frames_sha256"] == I.frames_digest(clip_frames[0:4])[0]
    shutil.rmtree(tmp_path / "prepped")
    assert stage.main(argv) == 2  # no prepped videos: one-line error, exit 2
