"""Stand-ins in the real on-disk layouts, and the readers of those layouts (HF cache, fp16 variants,
InsightFace ONNX recognisers, CelebAMask-HQ and CelebV-HQ release folders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ipfacediff import standins as S
from ipfacediff.errors import InputError
from ipfacediff.media import DataConfig, celeba_hq_images, celebv_hq_clips, check_user_data, select_eval_videos


def test_hf_cache_layout_is_what_huggingface_hub_reads(tmp_path, monkeypatch):
    from huggingface_hub import scan_cache_dir, snapshot_download

    src = tmp_path / "files"
    (src / "unet").mkdir(parents=True)
    (src / "model_index.json").write_text("{}")
    (src / "unet" / "config.json").write_text('{"a": 1}')
    snap = S.hf_cache_put(tmp_path / "hub", "someorg/some-model", src)
    repo = tmp_path / "hub" / "models--someorg--some-model"
    assert (repo / "refs" / "main").read_text() == snap.name and len(snap.name) == 40
    link = snap / "unet" / "config.json"
    assert link.is_symlink() and link.resolve().parent == (repo / "blobs").resolve() and link.read_text() == '{"a": 1}'
    assert Path(snapshot_download("someorg/some-model", cache_dir=str(tmp_path / "hub"), local_files_only=True)) == snap
    info = scan_cache_dir(tmp_path / "hub")
    assert [r.repo_id for r in info.repos] == ["someorg/some-model"] and not info.warnings


@pytest.mark.slow
def test_sd21_standin_loads_its_fp16_variant(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from ipfacediff.diffusion.models import load_components, resolve_pretrained

    work = tmp_path / "sd"
    S.write_sd21_base(work, crop_size=64)
    assert json.loads((work / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == "PNDMScheduler"
    snap = S.hf_cache_put(tmp_path / "hf" / "hub", S.SD21_BASE, work)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert resolve_pretrained(S.SD21_BASE) == snap
    fp16 = load_file(str(snap / "unet" / "diffusion_pytorch_model.fp16.safetensors"))
    # make the fp16 file distinguishable from a rounded fp32 one: the loader must read THIS file
    name = next(k for k in fp16 if k.endswith("conv_in.weight"))
    path = (snap / "unet" / "diffusion_pytorch_model.fp16.safetensors").resolve()
    from safetensors.torch import save_file

    fp16[name] = torch.full_like(fp16[name], 0.5)
    save_file(fp16, str(path), metadata={"format": "pt"})
    half = load_components(snap, dtype="float16")
    assert half.unet.dtype == torch.float16 and torch.all(half.unet.conv_in.weight == 0.5)
    full = load_components(snap, dtype="float32")
    assert full.unet.dtype == torch.float32 and not torch.all(full.unet.conv_in.weight == 0.5)
    with pytest.warns(UserWarning, match="device auto found no GPU"):
        auto = load_components(snap, device="auto", dtype="float16") if not torch.cuda.is_available() else None
    assert auto is None or auto.unet.dtype == torch.float32


@pytest.mark.slow
def test_arcface_from_an_insightface_onnx_pack_matches_onnxruntime(tmp_path):
    """w600k_r50.onnx-style file -> differentiable torch module; embeddings agree with onnxruntime to
    float32 rounding (1e-5 relative: the same graph, summation order may differ)."""
    import onnxruntime as ort

    from ipfacediff.train.identity_net import load_recognizer

    path = tmp_path / "buffalo_l" / "w600k_r50.onnx"
    S.write_insightface_onnx(path)
    rec = load_recognizer("arcface", path)
    assert rec.input_0_255 is False and "w600k_r50.onnx" in rec.name
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    got = rec(x.clone().requires_grad_(True))
    assert np.allclose(got.detach().numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    x.requires_grad_(True)
    rec(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(InputError, match="nope.onnx: recogniser weights not found"):
        load_recognizer("arcface", tmp_path / "nope.onnx")


def test_celeba_hq_release_layout(tmp_path, media_dir):
    root = tmp_path / "celeba"
    S.write_celeba_hq(root, media_dir, n_images=3, size=64)
    for i in (10, 2):  # ids beyond the first ones: numeric order, not string order
        (root / "CelebA-HQ-img" / f"{i}.jpg").write_bytes((root / "CelebA-HQ-img" / "0.jpg").read_bytes())
    files = celeba_hq_images(root)
    assert [p.name for p in files] == ["0.jpg", "1.jpg", "2.jpg", "10.jpg"]  # 2 written twice: one file
    assert not any("mask" in str(p) for p in files)
    flat = tmp_path / "flat"
    (flat / "CelebAMask-HQ-mask-anno" / "0").mkdir(parents=True)
    (flat / "CelebAMask-HQ-mask-anno" / "0" / "00000_skin.png").write_bytes(b"x")
    (flat / "3.png").write_bytes(b"x")
    assert [p.name for p in celeba_hq_images(flat)] == ["3.png"]


def test_celebv_hq_release_layout(tmp_path, media_dir):
    root = tmp_path / "celebv"
    ids = S.write_celebv_hq(root, media_dir, n_clips=2, seconds=0.3)
    clips = celebv_hq_clips(root)
    assert sorted(clips) == sorted(ids) and all(p.parent.name == "processed" for p in clips.values())
    assert len(list((root / "downloaded_celebvhq" / "raw").glob("*.mp4"))) == 2  # present, not clips
    cfg = DataConfig(source="user", celeba_hq=str(tmp_path / "none"), celebv_hq=str(root), n_eval_videos=1)
    assert [p.stem for p in select_eval_videos(cfg, root)] == sorted(ids)[:1]
    with pytest.raises(InputError, match=r"CelebA-HQ images not found at data.celeba_hq=.*README \"Dataset layouts\""):
        check_user_data(cfg)
    (root / "celebvhq_info.json").write_text("[]")
    with pytest.raises(InputError, match="celebvhq_info.json: not a CelebV-HQ info file"):
        celebv_hq_clips(root)


def test_gallery_reads_a_celebv_hq_release_folder(tmp_path, media_dir):
    from ipfacediff.metrics.identity import gallery_entries

    root = tmp_path / "celebv"
    ids = S.write_celebv_hq(root, media_dir, n_clips=2, seconds=0.3)
    entries, dropped = gallery_entries([root])
    assert sorted(cid for cid, _ in entries) == sorted(ids) and not dropped
