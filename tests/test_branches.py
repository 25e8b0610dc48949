"""Branch folders: saved by fine-tuning, loaded by the engine, switched per pass."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from ipfacediff.diffusion.branches import branch_mode, load_branches, lora_config, read_branch_meta, save_branch
from ipfacediff.errors import InputError


def _tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8, norm_num_groups=8,
    )


def _trained(name: str, seed: int) -> UNet2DConditionModel:
    unet = _tiny_unet()
    unet.add_adapter(lora_config(4), adapter_name=name)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:  # gaussian init leaves B = 0: make the adapter do something
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return unet


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 5, 32, generator=g)


def test_lora_branches_roundtrip_and_switch(tmp_path, inputs):
    x, e = inputs
    ident, direc = _trained("identity", 1), _trained("directional", 2)
    save_branch(ident, tmp_path / "identity", "identity", "lora", {"steps": 3})
    save_branch(direc, tmp_path / "directional", "directional", "lora")
    assert branch_mode(tmp_path / "identity") == "lora"
    assert read_branch_meta(tmp_path / "identity")["steps"] == 3
    from test_fsio import raw_metadata

    keys = list(raw_metadata(next((tmp_path / "identity").glob("*.safetensors"))))
    assert len(keys) >= 2 and keys == sorted(keys)  # canonical header: same weights, same bytes on every run
    base = _tiny_unet()
    branches = load_branches(base, {"identity": tmp_path / "identity", "directional": tmp_path / "directional"})
    with torch.no_grad():
        want_i, want_d, want_base = ident(x, 10, e).sample, direc(x, 10, e).sample, _tiny_unet()(x, 10, e).sample
        for _ in range(2):  # switching back and forth, including the no-op path
            with branches.use("identity") as unet:
                torch.testing.assert_close(unet(x, 10, e).sample, want_i, rtol=1e-5, atol=1e-5)
            with branches.use("identity") as unet:
                torch.testing.assert_close(unet(x, 10, e).sample, want_i, rtol=1e-5, atol=1e-5)
            with branches.use("directional") as unet:
                torch.testing.assert_close(unet(x, 10, e).sample, want_d, rtol=1e-5, atol=1e-5)
    assert (want_i - want_base).abs().max() > 1e-3 and (want_d - want_i).abs().max() > 1e-3
    assert branches.distinct_unets() == [base]


def test_missing_branch_is_base_weights_and_full_branch_is_separate(tmp_path, inputs):
    x, e = inputs
    full = _tiny_unet()
    with torch.no_grad():
        full.conv_out.weight.add_(0.5)
    save_branch(full, tmp_path / "directional", "directional", "full")
    ident = _trained("identity", 3)
    save_branch(ident, tmp_path / "identity", "identity", "lora")
    base = _tiny_unet()
    branches = load_branches(base, {"identity": tmp_path / "identity", "directional": tmp_path / "directional"})
    plain = load_branches(_tiny_unet(), {"identity": None, "directional": tmp_path / "absent"})
    with torch.no_grad():
        with branches.use("directional") as unet:
            torch.testing.assert_close(unet(x, 10, e).sample, full(x, 10, e).sample, rtol=1e-5, atol=1e-5)
        with branches.use("identity") as unet:
            torch.testing.assert_close(unet(x, 10, e).sample, ident(x, 10, e).sample, rtol=1e-5, atol=1e-5)
        with plain.use("identity") as unet:
            torch.testing.assert_close(unet(x, 10, e).sample, _tiny_unet()(x, 10, e).sample, rtol=1e-5, atol=1e-5)
    assert plain.sources == {"identity": "base", "directional": "base"}
    assert len(branches.distinct_unets()) == 2


def test_a_folder_that_is_not_a_branch_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_text("x")
    with pytest.raises(InputError, match="not a branch folder"):
        load_branches(_tiny_unet(), {"identity": tmp_path / "junk"})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "pytorch_lora_weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="cannot load LoRA adapter"):
        load_branches(_tiny_unet(), {"identity": tmp_path / "bad"})


def test_two_lora_branches_attach_without_peft_warning(tmp_path, inputs):
    """Both adapters go into one peft tuner: no "Already found a `peft_config`" warning, and the
    result is what diffusers' own loader gives."""
    import warnings

    save_branch(_trained("identity", 1), tmp_path / "identity", "identity", "lora")
    save_branch(_trained("directional", 2), tmp_path / "directional", "directional", "lora")
    paths = {"identity": tmp_path / "identity", "directional": tmp_path / "directional"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        branches = load_branches(_tiny_unet(), paths)
    assert not [w for w in caught if "peft_config" in str(w.message)]
    reference = _tiny_unet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers' loader itself warns for the second adapter
        for name, path in paths.items():
            reference.load_lora_adapter(str(path), adapter_name=name, prefix=None, use_safetensors=True)
    x, e = inputs
    with torch.no_grad():
        for name in paths:
            reference.set_adapters([name])
            with branches.use(name) as unet:
                assert torch.equal(unet(x, 10, e).sample, reference(x, 10, e).sample)


def test_a_lora_branch_is_the_same_bytes_in_every_process(tmp_path):
    """peft's target_modules set must not reach the file in hash-seed order (PYTHONHASHSEED differs per run)."""
    import json

    from safetensors import safe_open

    unet = _trained("identity", 0)
    save_branch(unet, tmp_path / "identity", "identity", "lora")
    with safe_open(str(next((tmp_path / "identity").glob("*.safetensors"))), "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert meta["target_modules"] == sorted(meta["target_modules"]) and len(meta["target_modules"]) > 1
    assert isinstance(unet.peft_config["identity"].target_modules, set)  # the live config is left as it was
