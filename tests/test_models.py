"""models.py: tiny/true-size building, the real CLIP tokenizer, pretrained resolution, loading, bad input."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from ipfacediff.diffusion import models as M
from ipfacediff.diffusion.clip_model import projected_features
from ipfacediff.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "base"
    M.build_tiny(out, seed=0)
    return out


@pytest.fixture(scope="module")
def comps(tiny_dir):
    return M.load_components(tiny_dir)


def test_tokenizer_matches_open_clip(comps):
    import open_clip

    texts = [
        "a photo of a face with glasses",
        "Add BANGS, sunglasses and a French beard",
        "an old man's face, 80 years old :)",
        "über-cool café  naïve",
        "",
        "a " + "very " * 100 + "long prompt",  # truncated: EOS lands in the last slot in both
    ]
    ours = comps.tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ours, open_clip.tokenize(texts))
    # SD 2's shipped tokenizer pads with "!" (id 0, as OpenCLIP pads); a literal "!" therefore maps to
    # 0 instead of OpenCLIP's "!</w>" (256). Kept on purpose: it is what the pretrained folder does.
    assert comps.tokenizer("wow!").input_ids[-2] == 0


def test_tiny_has_sd21_structure_and_schedule(comps):
    unet = comps.unet
    assert [type(b).__name__ for b in unet.down_blocks] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert [type(b).__name__ for b in unet.up_blocks] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    names = dict(unet.named_modules())
    # the PnP injection sites (TokenFlow's decoder blocks 4-11 and up_blocks[1].resnets[1])
    for n in ["up_blocks.1.resnets.1", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2", "up_blocks.3.attentions.2"]:
        assert n in names
    assert names["up_blocks.1.attentions.1.transformer_blocks.0.attn1"].is_cross_attention is False
    assert unet.config.use_linear_projection and unet.config.layers_per_block == 2
    assert len(comps.vae.config.block_out_channels) == 4 and comps.vae_scale == 8
    assert comps.vae.config.scaling_factor == pytest.approx(0.18215)
    cfg = comps.scheduler.config
    assert type(comps.scheduler).__name__ == "DDIMScheduler"
    for k, v in M.SCHEDULER_CONFIG.items():
        assert cfg[k] == v, k
    assert comps.text_encoder.config.max_position_embeddings == 77 and comps.text_encoder.config.vocab_size == 49408
    info = comps.info
    assert info["weights"] == "random" and len(info["sha256"]["combined"]) == 64


def test_latent_calibration_keeps_decoding(comps):
    import copy

    from diffusers import AutoencoderKL

    torch.manual_seed(3)
    vae = AutoencoderKL(**M.tiny_vae_config()).eval()
    calibrated = copy.deepcopy(vae)
    c = M.calibrate_latent_scale(calibrated, 64, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        z, zc = vae.encode(x).latent_dist.mean, calibrated.encode(x).latent_dist.mean
        assert torch.allclose(zc, c * z, rtol=1e-4, atol=1e-5)
        assert torch.allclose(calibrated.decode(zc).sample, vae.decode(z).sample, atol=1e-4)
    # the built model's scaled latents are near unit std (as SD's trained VAE gives), not ~0.05
    frames = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8, generator=g)
    assert 0.3 < float(M.encode_images(comps, M.uint8_to_tensor(frames)).std()) < 3


def test_build_is_deterministic(tiny_dir, tmp_path):
    again = M.build_tiny(tmp_path / "b", seed=0)
    assert again["sha256"] == json.loads((tiny_dir / M.INFO_FILE).read_text())["sha256"]
    other = M.build_tiny(tmp_path / "c", seed=1)
    assert other["sha256"]["combined"] != again["sha256"]["combined"]


def test_true_size_unet_has_865m_parameters():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):  # shapes only, no memory
        unet = UNet2DConditionModel(**M.sd21_unet_config())
        vae = AutoencoderKL(**M.sd21_vae_config())
        text = CLIPTextModel(CLIPTextConfig(**M.sd21_text_config()))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == pytest.approx(865.9e6, rel=1e-3)  # SD 2.1-base UNet: 865,910,724
    assert count(vae) == pytest.approx(83.65e6, rel=1e-3)
    assert count(text) == pytest.approx(340.4e6, rel=1e-3)  # OpenCLIP ViT-H text tower minus its last layer
    attn = unet.up_blocks[1].attentions[1].transformer_blocks[0].attn1  # 1280 channels, 20 heads of 64
    assert (attn.heads, attn.inner_dim // attn.heads) == (20, 64)


def test_prompt_encoding_and_bad_prompts(comps):
    emb = M.encode_prompt(comps, ["a face", ""])
    assert emb.shape == (2, 77, comps.text_encoder.config.hidden_size)
    assert not torch.equal(emb[0], emb[1])
    with pytest.raises(InputError, match="empty prompt"):
        M.encode_prompt(comps, "   ", allow_empty=False)
    long = "a face with " + " ".join(f"w{i}" for i in range(80)) + " finalword"
    with pytest.warns(M.PromptTruncationWarning, match="finalword"):
        M.encode_prompt(comps, long)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.encode_prompt(comps, "a face with glasses")  # fits: no warning
    assert M.truncated_text(comps.tokenizer, "short") == ""


def test_latent_helpers(comps):
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=g)
    x = M.uint8_to_tensor(frames)
    assert x.shape == (3, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    assert (torch.as_tensor(M.tensor_to_uint8(x)) == frames).all()  # exact round trip
    z = M.encode_images(comps, x, batch_size=2)
    assert z.shape == (3, 4, 8, 8)
    assert torch.allclose(z, M.encode_images(comps, x, batch_size=3), atol=1e-5, rtol=1e-5)  # batching: float noise only
    assert M.decode_latents(comps, z).shape == (3, 3, 64, 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        M.encode_images(comps, torch.zeros(1, 3, 60, 64))


def _fake_hf_cache(root: Path, repo: str, src: Path) -> Path:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / "hub" / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    shutil.copytree(src, snap)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snap


def test_resolve_from_hf_cache_and_load_through_pointer(tiny_dir, comps, tmp_path, monkeypatch):
    src = tmp_path / "plain"
    shutil.copytree(tiny_dir, src)
    (src / M.INFO_FILE).unlink()  # a real hub snapshot has no ipfacediff.json
    snap = _fake_hf_cache(tmp_path / "hf", "someorg/tiny-sd", src)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert M.resolve_pretrained("someorg/tiny-sd") == snap
    info = M.link_pretrained("someorg/tiny-sd", tmp_path / "models" / "base")
    assert info["path"] == str(snap) and info["weights"] == "pretrained"
    assert sorted(p.name for p in (tmp_path / "models" / "base").iterdir()) == [M.INFO_FILE]  # no copy
    # same weights, same hash of the UNet file, same outputs through the pointer
    assert info["sha256"]["unet/diffusion_pytorch_model.safetensors"] == comps.info["sha256"]["unet/diffusion_pytorch_model.safetensors"]
    linked = M.load_components(tmp_path / "models" / "base")
    x, t, e = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 77, 64)
    assert torch.equal(linked.unet(x, t, e).sample, comps.unet(x, t, e).sample)
    with pytest.raises(InputError, match="`hf download someorg/absent`"):
        M.resolve_pretrained("someorg/absent")


def test_bad_model_folders(tiny_dir, tmp_path):
    with pytest.raises(InputError, match="model folder not found"):
        M.load_components(tmp_path / "nope")
    with pytest.raises(InputError, match="models.pretrained: model folder not found.*`hf download"):
        M.resolve_pretrained(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    with pytest.raises(InputError, match=r"unet.*cannot load unet"):
        M.load_components(broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(InputError, match="missing vae"):
        M.load_components(broken)
    pointer = tmp_path / "pointer"
    pointer.mkdir()
    (pointer / M.INFO_FILE).write_text(json.dumps({"path": str(tmp_path / "gone"), "sha256": {}}))
    with pytest.raises(InputError, match="does not exist"):
        M.load_components(pointer)
    (pointer / M.INFO_FILE).write_text("{not json")
    with pytest.raises(InputError, match="corrupt model info"):
        M.load_components(pointer)
    with pytest.raises(InputError, match="unknown dtype"):
        M.resolve_dtype("float8")


def test_tiny_clip_loads_and_embeds(tmp_path):
    info = M.build_tiny_clip(tmp_path / "clip", seed=0)
    clip = M.load_clip_model(tmp_path / "clip")
    assert clip.info["sha256"] == info["sha256"]
    import numpy as np

    ramp = np.linspace(0, 255, 80).round().astype(np.uint8)
    image = np.stack([np.add.outer(ramp // 2, ramp // 2), np.tile(ramp, (80, 1)), np.tile(ramp[:, None], (1, 80))], -1)
    pix = clip.processor(images=[image], return_tensors="pt").pixel_values
    assert pix.shape == (1, 3, 64, 64)
    ids = clip.tokenizer(["a face"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    img = projected_features(clip.model.get_image_features(pixel_values=pix))
    assert torch.allclose(projected_features(clip.model.get_text_features(input_ids=ids)), clip.text_embeds(["a face"]))
    # the differentiable preprocessing agrees with the PIL processor on a smooth image (normalised units;
    # PIL and torch bicubic differ at the borders and by uint8 rounding)
    x = M.uint8_to_tensor(torch.from_numpy(image)[None]).requires_grad_(True)
    assert (clip.pixels(x) - pix).abs().mean() < 0.02
    ours = clip.image_embeds(x)
    assert ours.shape == img.shape == (1, 32)
    ours.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_models_stage(tmp_path):
    import importlib.util
    import yaml

    spec = importlib.util.spec_from_file_location("stage_models", ROOT / "stages" / "models.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    params = {"seed": 0, "wandb": {"mode": "disabled"}, "data": {"crop_size": 64}, "models": {"source": "tiny", "clip": None}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert stage.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "models")]) == 0
    assert (tmp_path / "models" / "base" / "model_index.json").is_file()
    assert (tmp_path / "models" / "clip" / M.INFO_FILE).is_file()
    # a missing pretrained model: exit 2, one line, nothing written
    params["models"] = {"source": "local", "pretrained": str(tmp_path / "no_such_sd"), "clip": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert stage.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "m2")]) == 2
    assert not (tmp_path / "m2").exists()
