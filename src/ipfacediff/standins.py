"""Stand-ins for the paper profile's weights and datasets, in their real on-disk layouts.

`python -m ipfacediff.standins OUT [--media ../shared/media]` writes, in seconds, small random-weight
models and a few real face clips where a researcher's machine would have the real ones:

  OUT/hf/hub/models--<org>--<name>/{blobs/<sha256>, snapshots/<rev>/<files>, refs/main}   (HF_HOME=OUT/hf)
      stabilityai/stable-diffusion-2-1-base   SD 2.1-base's configs (PNDM scheduler, feature_extractor,
                                              fp16 variant files) at reduced width
      openai/clip-vit-base-patch32, -patch16  CLIPModel (224 px, real patch sizes) + tokenizer + processor
      Salesforce/blip2-opt-2.7b               Blip2ForConditionalGeneration (real config keys) + an OPT
                                              byte-level BPE tokenizer written here + Blip2Processor
  OUT/external/arcface_r100/backbone.pth      insightface arcface_torch IResNet state dict (real key names;
                                              IResNet-18 block counts unless --arcface r100)
  OUT/external/antelopev2/glintr100.onnx      CosFace ResNet in InsightFace's ONNX layout (NCHW, 112 px)
  OUT/deepface/.deepface/weights/vgg_face_weights.onnx   VGG-Face (deepface's ONNX export format:
                                              NHWC 224 px BGR [0, 1] -> 4096-d), reduced width
  OUT/torch/checkpoints/20180402-114759-vggface2.pt      facenet-pytorch InceptionResnetV1 (true size)
  OUT/torch/hub/checkpoints/raft_large_C_T_SKHT_V2-ff5fadd5.pth   torchvision raft_large (true size)
  OUT/external/celeba_hq/CelebA-HQ-img/<i>.jpg + CelebAMask-HQ-mask-anno/ + mapping/attribute files
  OUT/external/celebv_hq/celebvhq_info.json + downloaded_celebvhq/{raw,processed}/*.mp4

`environment(OUT)` is the HF_HOME / TORCH_HOME / DEEPFACE_HOME a run against them needs. Weights are
random: numbers computed with them measure the pipeline, never the method. Nothing here is committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

SD21_BASE = "stabilityai/stable-diffusion-2-1-base"
CLIP_B32 = "openai/clip-vit-base-patch32"
CLIP_B16 = "openai/clip-vit-base-patch16"
BLIP2 = "Salesforce/blip2-opt-2.7b"
FACENET_VGGFACE2 = "20180402-114759-vggface2.pt"
RAFT_LARGE = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"
ARCFACE_LAYERS = {"r18": (2, 2, 2, 2), "r100": (3, 13, 30, 3)}
# SD 2.1-base's scheduler/scheduler_config.json (the repo ships PNDM; DDIM reads the same schedule)
SD21_SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
                      num_train_timesteps=1000, prediction_type="epsilon", set_alpha_to_one=False,
                      skip_prk_steps=True, steps_offset=1, trained_betas=None)


def environment(out: str | Path) -> dict[str, str]:
    """Environment variables pointing the libraries' usual caches at the stand-ins under `out`."""
    out = Path(out).resolve()
    return {"HF_HOME": str(out / "hf"), "TORCH_HOME": str(out / "torch"), "DEEPFACE_HOME": str(out / "deepface"),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


# --------------------------------------------------------------------------- Hugging Face cache layout


def hf_cache_put(hub: Path, repo_id: str, files_dir: Path) -> Path:
    """Move `files_dir`'s files into the hub cache as huggingface_hub lays them out: content-addressed
    blobs, a snapshot folder of relative symlinks named by revision, refs/main naming that revision."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in files_dir.rglob("*") if p.is_file())
    digests = {p.relative_to(files_dir).as_posix(): _sha256(p) for p in files}
    rev = hashlib.sha1(json.dumps(digests, sort_keys=True).encode()).hexdigest()  # a commit-like 40-hex id
    snap = repo / "snapshots" / rev
    for p in files:
        rel = p.relative_to(files_dir).as_posix()
        blob = repo / "blobs" / digests[rel]
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.move(str(p), blob)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return snap


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- models


def write_sd21_base(dst: Path, seed: int = 0, crop_size: int = 64) -> None:
    """SD 2.1-base's folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/,
    feature_extractor/) with its configs at reduced width, plus the fp16 variant files the repo ships."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPImageProcessor

    from .diffusion.models import _build, tiny_text_config, tiny_unet_config, tiny_vae_config

    comps = _build(tiny_unet_config(crop_size // 8), tiny_vae_config(crop_size), tiny_text_config(), seed, dst / "_tok")
    pipe = StableDiffusionPipeline(
        vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=comps.unet,
        scheduler=PNDMScheduler.from_config(SD21_SCHEDULER), safety_checker=None, requires_safety_checker=False,
        feature_extractor=CLIPImageProcessor(crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224}),
    )
    pipe.save_pretrained(str(dst), safe_serialization=True)
    pipe.to(torch.float16).save_pretrained(str(dst), safe_serialization=True, variant="fp16")
    shutil.rmtree(dst / "_tok")
    # the repo's file verbatim in its keys (PNDM ignores clip_sample/set_alpha_to_one, DDIM reads them)
    (dst / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "PNDMScheduler", "_diffusers_version": "0.10.0.dev0", **SD21_SCHEDULER}, indent=2))


def write_clip(dst: Path, patch_size: int, seed: int = 0) -> None:
    """openai/clip-vit-base-patch{32,16}: 224 px, the real patch size, real tokenizer, reduced width."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from .diffusion.models import tiny_text_config, write_clip_tokenizer_files

    text = dict(tiny_text_config(), projection_dim=512, pad_token_id=1, bos_token_id=49406, eos_token_id=49407)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=224,
                  patch_size=patch_size, projection_dim=512)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)).save_pretrained(str(dst), safe_serialization=True)
    vocab, merges = write_clip_tokenizer_files(dst / "_tok")
    CLIPTokenizer(str(vocab), str(merges), model_max_length=77).save_pretrained(str(dst))  # pads with <|endoftext|>, as OpenAI's
    CLIPImageProcessor(crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224}).save_pretrained(str(dst))
    shutil.rmtree(dst / "_tok")


def opt_tokenizer(work: Path):
    """A byte-level BPE tokenizer with OPT's special tokens (<s>=0, <pad>=1, </s>=2, <unk>=3), built
    offline: one token per byte, no merges (OPT's real 50k-merge table cannot be downloaded here)."""
    from transformers import GPT2Tokenizer

    from .diffusion.tokenizer import bytes_to_unicode

    vocab = ["<s>", "<pad>", "</s>", "<unk>", *bytes_to_unicode().values()]
    work.mkdir(parents=True, exist_ok=True)
    (work / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (work / "merges.txt").write_text("#version: 0.2\n")
    return GPT2Tokenizer(str(work / "vocab.json"), str(work / "merges.txt"), bos_token="</s>", eos_token="</s>",
                         pad_token="<pad>", unk_token="</s>", add_prefix_space=False)


def write_blip2(dst: Path, seed: int = 0) -> None:
    """Salesforce/blip2-opt-2.7b's layout: ViT (224 px, patch 14) + Q-Former + OPT, real config keys at
    reduced width; Blip2Processor (BlipImageProcessor + the OPT tokenizer with its <image> token)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    tok = opt_tokenizer(dst / "_tok")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    n_query = 4
    cfg = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=224, patch_size=14),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, encoder_hidden_size=32),
        text_config=dict(model_type="opt", vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                         word_embed_proj_dim=32, max_position_embeddings=128, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        num_query_tokens=n_query, image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    Blip2ForConditionalGeneration(cfg).save_pretrained(str(dst), safe_serialization=True)
    image_processor = BlipImageProcessor(size={"height": 224, "width": 224}, do_convert_rgb=True)
    Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=n_query).save_pretrained(str(dst))
    shutil.rmtree(dst / "_tok")


def arcface_iresnet(layers: tuple[int, ...], seed: int = 0):
    from .recognition.arcface import IResNet

    torch.manual_seed(seed)
    return IResNet(layers).eval()


def write_arcface(path: Path, layers: tuple[int, ...], seed: int = 0) -> None:
    """arcface_torch's backbone.pth: a plain state dict with IResNet's parameter names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(arcface_iresnet(layers, seed).state_dict(), path)


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(module.eval(), example, str(path), input_names=["input.1"], output_names=["embedding"],
                      dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=13, dynamo=False)


def write_insightface_onnx(path: Path, seed: int = 1) -> None:
    """An InsightFace-pack recogniser (glintr100.onnx / w600k_r50.onnx layout): NCHW RGB 112x112 in
    [-1, 1] -> 512-d, IResNet graph (the smallest depth: the export is what is tested, not the depth)."""
    export_onnx(arcface_iresnet((1, 1, 1, 1), seed), torch.zeros(1, 3, 112, 112), path)


class VGGFaceStandIn(torch.nn.Module):
    """VGG-Face's interface as deepface's ONNX export has it (NHWC 224x224 BGR in [0, 1] -> 4096-d),
    five conv blocks at 1/16 of VGG's width."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for ch in (4, 8, 16, 32, 32):
            layers += [torch.nn.Conv2d(cin, ch, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
            cin = ch
        self.features = torch.nn.Sequential(*layers)
        self.fc = torch.nn.Linear(32 * 7 * 7, 4096)

    def forward(self, x):
        return torch.relu(self.fc(self.features(x.permute(0, 3, 1, 2)).flatten(1)))


def write_vggface_onnx(path: Path, seed: int = 2) -> None:
    torch.manual_seed(seed)
    export_onnx(VGGFaceStandIn(), torch.zeros(1, 224, 224, 3), path)


def write_facenet_vggface2(path: Path, seed: int = 3) -> None:
    """facenet-pytorch's 20180402-114759-vggface2.pt: InceptionResnetV1 state dict with its 8631-way logits."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(InceptionResnetV1(pretrained=None, classify=True, num_classes=8631).state_dict(), path)


def write_raft_large(path: Path, seed: int = 4) -> None:
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raft_large(weights=None, progress=False).state_dict(), path)


# --------------------------------------------------------------------------- datasets


def _square_face_frames(path: Path, n: int, stride: int, size: int) -> list[np.ndarray]:
    """`n` frames (every `stride`-th) of a video or one still, centre-cropped square and resized."""
    import cv2

    from .video import iter_timed_frames

    if path.suffix.lower() in {".jpg", ".jpeg", ".png"}:
        frames = [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)]
    else:
        frames = [a for i, (_, a, _) in enumerate(iter_timed_frames(path, max_frames=n * stride)) if i % stride == 0]
    out = []
    for a in frames[:n]:
        h, w = a.shape[:2]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        out.append(cv2.resize(np.ascontiguousarray(a[y:y + s, x:x + s]), (size, size), interpolation=cv2.INTER_AREA))
    return out


def write_celeba_hq(root: Path, media: Path, n_images: int = 6, size: int = 256) -> None:
    """CelebAMask-HQ's release layout: CelebA-HQ-img/<i>.jpg (ids 0..), the part masks beside them in
    CelebAMask-HQ-mask-anno/<i // 2000>/<i:05d>_<part>.png, and the mapping / attribute text files."""
    import cv2

    sources = sorted((media / "stills").glob("*")) + sorted((media / "videos").glob("*"))
    images: list[np.ndarray] = []
    for src in sources:
        images += _square_face_frames(src, 1 if "stills" in src.parts else 2, 25, size)
    if len(images) < n_images:
        raise InputError(media, f"only {len(images)} face images found for a CelebA-HQ stand-in of {n_images}")
    img_dir, masks = root / "CelebA-HQ-img", root / "CelebAMask-HQ-mask-anno"
    img_dir.mkdir(parents=True)
    mapping = ["idx         orig_idx    orig_file"]
    for i, img in enumerate(images[:n_images]):
        cv2.imwrite(str(img_dir / f"{i}.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        mask = np.zeros((size // 2, size // 2), np.uint8)
        mask[size // 8: 3 * size // 8, size // 8: 3 * size // 8] = 255
        (masks / str(i // 2000)).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(masks / str(i // 2000) / f"{i:05d}_skin.png"), mask)
        mapping.append(f"{i:<12d}{100000 + i:<12d}{100000 + i:06d}.jpg")
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(mapping) + "\n")
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text(
        f"{n_images}\nEyeglasses Male Smiling\n" + "".join(f"{i}.jpg -1 1 -1\n" for i in range(n_images)))


def write_celebv_hq(root: Path, media: Path, n_clips: int = 3, seconds: float = 1.0) -> list[str]:
    """CelebV-HQ's layout after its download_and_process.py: celebvhq_info.json (meta_info + clips
    keyed <ytb_id>_<k> with duration, bbox, attributes) and processed/<clip id>.mp4 cut from
    raw/<ytb_id>.mp4. Clips are cut from the real face videos in `media` (re-encoded, H.264)."""
    from .media import cut_clip
    from .video import probe

    videos = sorted(p for p in (media / "videos").glob("*") if p.suffix in {".mp4", ".mpg"})
    if len(videos) < n_clips:
        raise InputError(media / "videos", f"only {len(videos)} face videos for {n_clips} CelebV-HQ stand-in clips")
    raw, processed = root / "downloaded_celebvhq" / "raw", root / "downloaded_celebvhq" / "processed"
    raw.mkdir(parents=True)
    processed.mkdir(parents=True)
    clips = {}
    for k, src in enumerate(videos[:n_clips]):
        ytb_id = hashlib.sha1(src.name.encode()).hexdigest()[:11]  # YouTube ids are 11 characters
        clip_id = f"{ytb_id}_0"
        info = probe(src)
        cut_clip(src, raw / f"{ytb_id}.mp4", 0.0, min(2 * seconds, info.duration_s))
        cut_clip(src, processed / f"{clip_id}.mp4", 0.0, seconds)
        clips[clip_id] = {"ytb_id": ytb_id, "duration": {"start_sec": 0.0, "end_sec": seconds},
                          "bbox": {"top": 0.0, "bottom": 1.0, "left": 0.0, "right": 1.0},
                          "attributes": {"appearance": [0] * 40, "action": [0] * 35, "emotion": {"sep_flag": False, "labels": "neutral"}},
                          "version": "v0.1", "source": f"stand-in cut from {src.name}"}
    (root / "celebvhq_info.json").write_text(json.dumps({"meta_info": {"appearance_mapping": [], "action_mapping": [],
                                                                        "emotion_mapping": ["neutral"]}, "clips": clips}, indent=1))
    return list(clips)


# --------------------------------------------------------------------------- all of it


def build_standins(out: str | Path, media: str | Path, crop_size: int = 64, arcface: str = "r18", seed: int = 0,
                   n_images: int = 6, n_clips: int = 3) -> dict[str, str]:
    """Write every stand-in under `out` (replaced as a whole); returns `environment(out)`."""
    from tqdm import tqdm

    out, media = Path(out), Path(media)
    if not (media / "videos").is_dir():
        raise InputError(media, "face media folder with videos/ and stills/ not found (e.g. ../shared/media)")
    if arcface not in ARCFACE_LAYERS:
        raise InputError(None, f"--arcface must be one of {', '.join(ARCFACE_LAYERS)}")
    tmp = Path(tempfile.mkdtemp(prefix=".standins-", dir=out.parent if out.parent.exists() else None))
    hub = tmp / "hf" / "hub"
    steps = [
        ("SD 2.1-base", lambda w: (write_sd21_base(w, seed, crop_size), hf_cache_put(hub, SD21_BASE, w))),
        ("CLIP ViT-B/32", lambda w: (write_clip(w, 32, seed), hf_cache_put(hub, CLIP_B32, w))),
        ("CLIP ViT-B/16", lambda w: (write_clip(w, 16, seed + 1), hf_cache_put(hub, CLIP_B16, w))),
        ("BLIP-2", lambda w: (write_blip2(w, seed), hf_cache_put(hub, BLIP2, w))),
        ("ArcFace", lambda w: write_arcface(tmp / "external" / "arcface_r100" / "backbone.pth", ARCFACE_LAYERS[arcface], seed)),
        ("CosFace", lambda w: write_insightface_onnx(tmp / "external" / "antelopev2" / "glintr100.onnx")),
        ("VGG-Face", lambda w: write_vggface_onnx(tmp / "deepface" / ".deepface" / "weights" / "vgg_face_weights.onnx")),
        ("FaceNet", lambda w: write_facenet_vggface2(tmp / "torch" / "checkpoints" / FACENET_VGGFACE2)),
        ("RAFT", lambda w: write_raft_large(tmp / "torch" / "hub" / "checkpoints" / RAFT_LARGE)),
        ("CelebA-HQ", lambda w: write_celeba_hq(tmp / "external" / "celeba_hq", media, n_images)),
        ("CelebV-HQ", lambda w: write_celebv_hq(tmp / "external" / "celebv_hq", media, n_clips)),
    ]
    try:
        for i, (name, make) in enumerate(tqdm(steps, desc="stand-ins", unit="item")):
            make(tmp / "_work" / str(i))
        shutil.rmtree(tmp / "_work", ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return environment(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ipfacediff.standins", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder to (re)create")
    ap.add_argument("--media", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "media",
                    help="real face clips and stills (videos/, stills/) to cut the datasets from")
    ap.add_argument("--crop-size", type=int, default=64, help="SD stand-in's sample size in pixels")
    ap.add_argument("--arcface", default="r18", choices=sorted(ARCFACE_LAYERS), help="IResNet depth of backbone.pth")
    args = ap.parse_args(argv)
    try:
        env = build_standins(args.out, args.media, args.crop_size, args.arcface)
    except InputError as e:
        print(f"standins: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(f"export {k}={v}" for k, v in env.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
