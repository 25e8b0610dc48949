"""Diffusion and CLIP models: build (tiny or true-size random weights), resolve (pretrained), load.

Every consumer (fine-tuning, inversion, editing, metrics) loads through `load_components` /
`load_clip`, whatever the weights are, so the sample profile exercises the paper profile's code.

On-disk contract (`models/base/`, written by the `models` stage):
  - built weights (`tiny`, `true_size`): a diffusers StableDiffusionPipeline folder
    (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`) plus
    `ipfacediff.json` {source, weights: "random", sha256: {component: hash, "combined": hash}, note};
  - pretrained weights (`local`): ONLY `ipfacediff.json` with `"path"` pointing at the resolved folder
    (a local folder or a Hugging Face cache snapshot) and the hashes of its weight files: a multi-GB
    copy into the DVC cache would buy nothing, and the hashes make the stage output change whenever
    the weights do. `load_components` follows the pointer.
`models/clip/` follows the same rule with a transformers CLIPModel + CLIPTokenizer + CLIPImageProcessor.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import InputError
from ..settings import ModelsSettings
from ..fsio import atomic_dir, sha256_file, write_json


INFO_FILE = "ipfacediff.json"
SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
SD21_BASE = "stabilityai/stable-diffusion-2-1-base"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
MAX_TOKENS = 77
OBTAIN_HINT = (
    "obtain it on a networked machine with `huggingface-cli download {spec}` (then copy the Hugging Face "
    "cache, or set HF_HOME to it), or set models.pretrained to a local diffusers folder"
)

# SD 2.1-base noise schedule (REFERENCE section 5); DDIM needs steps_offset=1 to match the training grid.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)




ModelsConfig = ModelsSettings  # params `models` (settings.py)


# --------------------------------------------------------------------------- architecture configs


def sd21_unet_config(sample_size: int = 64) -> dict[str, Any]:
    return dict(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=(5, 10, 20, 20),  # diffusers' name; these are head COUNTS (64-d heads)
        cross_attention_dim=1024,
        use_linear_projection=True,
    )


def tiny_unet_config(sample_size: int = 8) -> dict[str, Any]:
    """SD 2.1-base's block structure and module names, channels scaled down ~10x."""
    return dict(
        sd21_unet_config(sample_size),
        block_out_channels=(32, 32, 64, 64),
        attention_head_dim=(2, 2, 4, 4),  # 16-d heads
        cross_attention_dim=64,
    )


def sd21_vae_config(sample_size: int = 512) -> dict[str, Any]:
    return dict(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        scaling_factor=0.18215,
    )


def tiny_vae_config(sample_size: int = 64) -> dict[str, Any]:
    # four levels keep the 8x downsampling; one resnet per level and 8-group norms keep it fast
    return dict(sd21_vae_config(sample_size), block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8)


def sd21_text_config() -> dict[str, Any]:
    return dict(
        vocab_size=49408,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=23,
        num_attention_heads=16,
        max_position_embeddings=MAX_TOKENS,
        hidden_act="gelu",
        projection_dim=512,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,
    )


def tiny_text_config() -> dict[str, Any]:
    return dict(sd21_text_config(), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, projection_dim=64)


# --------------------------------------------------------------------------- tokenizer


def clip_bpe_path() -> Path:
    """The CLIP BPE merges shipped inside open_clip_torch (no download)."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise InputError(path, "CLIP BPE vocabulary not found in open_clip_torch (reinstall open-clip-torch)")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    # OpenAI CLIP's reversible byte -> printable-unicode table (vocab order depends on it)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_clip_tokenizer_files(out_dir: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt from open_clip's BPE file, built the way OpenAI CLIP builds its vocabulary."""
    lines = gzip.open(clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_vocab = list(_bytes_to_unicode().values())
    vocab = byte_vocab + [v + "</w>" for v in byte_vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_file, merges_file


def build_clip_tokenizer(work_dir: Path):
    """A real CLIPTokenizer (OpenAI/OpenCLIP vocabulary, 77 tokens, pads with "!" = id 0 like OpenCLIP/SD 2)."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_clip_tokenizer_files(work_dir)
    return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token="!", model_max_length=MAX_TOKENS)


# --------------------------------------------------------------------------- building


@dataclass
class Components:
    """What every consumer needs from a Stable Diffusion folder."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    info: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def model_hash(self) -> str:
        return str(self.info.get("sha256", {}).get("combined", "unknown"))

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def new_scheduler(self, cls=None):
        """A fresh scheduler of `cls` (default: the loaded DDIM) with this model's noise schedule."""
        return (cls or type(self.scheduler)).from_config(self.scheduler.config)


def make_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def _build(unet_cfg, vae_cfg, text_cfg, seed: int, tokenizer_dir: Path, dtype=torch.float32) -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**vae_cfg)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    tokenizer = build_clip_tokenizer(tokenizer_dir)
    calibrate_latent_scale(vae, 64, seed)  # fully convolutional: 64 px calibrates any size
    comps = Components(unet, vae, text_encoder, tokenizer, make_scheduler())
    for m in (comps.unet, comps.vae, comps.text_encoder):
        if dtype != torch.float32:  # built in float32; diffusers warns on any .to(dtype) call
            m.to(dtype)
        m.eval().requires_grad_(False)
    return comps


@torch.no_grad()
def calibrate_latent_scale(vae, size: int, seed: int) -> float:
    """Rescale a random VAE's latent means so scaled latents have unit std, as SD's trained VAE has.

    0.18215 is SD's factor for raw latents of std ~5.5; a random encoder gives ~0.3, whose scaled
    latents (std ~0.05) would sit far below the noise schedule's signal levels. The mean channels of
    `quant_conv` are scaled by c and `post_quant_conv`'s input by 1/c: decoding is unchanged.
    Calibrated on smooth random images (seeded), not on data.
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.interpolate(torch.randn(4, 3, 8, 8, generator=g), size=(size, size), mode="bilinear").clamp(-1, 1)
    std = vae.encode(images).latent_dist.mean.std() * vae.config.scaling_factor
    c = float(1.0 / std)
    k = vae.config.latent_channels
    vae.quant_conv.weight[:k] *= c
    vae.quant_conv.bias[:k] *= c
    vae.post_quant_conv.weight /= c
    return c


def build_tiny(out_dir: str | Path, seed: int = 0, sample_size: int = 64) -> dict:
    """Build random-weight SD-shaped models for `sample_size`-pixel images and save them to `out_dir`."""
    with atomic_dir(out_dir) as tmp:
        comps = _build(tiny_unet_config(sample_size // 8), tiny_vae_config(sample_size), tiny_text_config(), seed, tmp / "_tok")
        info = _save_pipeline(
            comps, tmp, source="tiny", note=f"random weights, SD 2.1-base block structure scaled down (seed {seed}); numbers from it are not results"
        )
    return info


def build_true_size(seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", sample_size: int = 512) -> Components:
    """SD 2.1-base at true size (~865M UNet parameters) with random weights, for speed and memory work."""
    import tempfile

    with tempfile.TemporaryDirectory() as tok_dir:
        comps = _build(sd21_unet_config(sample_size // 8), sd21_vae_config(sample_size), sd21_text_config(), seed, Path(tok_dir), dtype)
    comps.info = {"source": "true_size", "weights": "random", "sha256": {"combined": f"true_size-random-seed{seed}"}, "note": "random weights at SD 2.1-base size"}
    for m in (comps.unet, comps.vae, comps.text_encoder):
        m.to(device)
    return comps


def save_true_size(out_dir: str | Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict:
    with atomic_dir(out_dir) as tmp:
        comps = build_true_size(seed, dtype)
        return _save_pipeline(comps, tmp, source="true_size", note=f"random weights at SD 2.1-base size (seed {seed}); numbers from it are not results")


def _save_pipeline(comps: Components, folder: Path, source: str, note: str) -> dict:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=comps.unet,
        scheduler=comps.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    shutil.rmtree(folder / "_tok", ignore_errors=True)  # tokenizer build files; the pipeline saved its own copy
    info = {"source": source, "weights": "random", "sha256": weight_hashes(folder), "note": note}
    write_json(folder / INFO_FILE, info)
    return info


def weight_hashes(folder: str | Path) -> dict[str, str]:
    """sha256 of every weight file under `folder` (relative path -> hash) plus a combined hash."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES and ".cache" not in p.parts)
    hashes = {str(p.relative_to(folder)): sha256_file(p) for p in files}
    combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in hashes.items()).encode()).hexdigest()
    return {**hashes, "combined": combined}


def prepare_models(cfg: ModelsConfig, out_dir: str | Path, seed: int = 0, sample_size: int = 64) -> dict:
    """The `models` stage: write `out_dir/base` and `out_dir/clip`; returns their infos."""
    out_dir = Path(out_dir)
    if cfg.source == "tiny":
        base = build_tiny(out_dir / "base", seed, sample_size)
    elif cfg.source == "true_size":
        base = save_true_size(out_dir / "base", seed)
    elif cfg.source == "local":
        base = link_pretrained(cfg.pretrained, out_dir / "base")
    else:
        raise InputError("params.yaml", f"models.source: unknown {cfg.source!r}; expected tiny, local or true_size")
    if cfg.clip is None:
        clip = build_tiny_clip(out_dir / "clip", seed)
    else:
        clip = link_pretrained(cfg.clip, out_dir / "clip", required=("config.json",))
    return {"base": base, "clip": clip}


# --------------------------------------------------------------------------- CLIP (directional loss, scores)


def build_tiny_clip(out_dir: str | Path, seed: int = 0) -> dict:
    """Random-weight CLIPModel (vision + text) + the real CLIP tokenizer + CLIPImageProcessor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    text = dict(tiny_text_config(), projection_dim=32)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16, projection_dim=32)
    with atomic_dir(out_dir) as tmp:
        torch.manual_seed(seed)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).eval()
        model.save_pretrained(str(tmp), safe_serialization=True)
        build_clip_tokenizer(tmp / "_tok").save_pretrained(str(tmp))
        CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(str(tmp))
        shutil.rmtree(tmp / "_tok")
        info = {"source": "tiny", "weights": "random", "sha256": weight_hashes(tmp), "note": f"random-weight CLIP (seed {seed}); scores from it are not results"}
        write_json(tmp / INFO_FILE, info)
    return info


@dataclass
class ClipComponents:
    model: Any
    tokenizer: Any
    processor: Any
    info: dict = field(default_factory=dict)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable CLIP preprocessing of images (N, 3, H, W) in [-1, 1]: resize + normalise."""
        import torch.nn.functional as F

        size = self.model.config.vision_config.image_size
        x = F.interpolate(images.float().add(1).div(2), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(self.processor.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.processor.image_std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.model.dtype)

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """Projected CLIP image features (N, P) of images in [-1, 1] (unnormalised; keeps gradients)."""
        return _features(self.model.get_image_features(pixel_values=self.pixels(images)))

    def text_embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        """Projected CLIP text features (N, P) (unnormalised)."""
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
        return _features(self.model.get_text_features(input_ids=ids.to(self.model.device)))


def _features(out) -> torch.Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output holds the projection; 4.x a tensor
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_clip(clip_dir: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32) -> ClipComponents:
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder, info = _follow(clip_dir, required=("config.json",))
    try:
        model = CLIPModel.from_pretrained(str(folder), torch_dtype=resolve_dtype(dtype), local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        processor = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise InputError(folder, f"cannot load CLIP model: {_first_line(e)}") from e
    return ClipComponents(model.to(device).eval().requires_grad_(False), tokenizer, processor, info)


# --------------------------------------------------------------------------- resolving pretrained weights


def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub would use, read from the environment NOW (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home) / "hub"


def resolve_pretrained(spec: str | Path, required: Sequence[str] = ("model_index.json",) + tuple(f"{c}" for c in SD_COMPONENTS)) -> Path:
    """A local folder, or `org/name` looked up in the Hugging Face cache without touching the network.

    `required` are paths that must exist in the folder. Raises InputError saying how to obtain it.
    """
    path = Path(os.path.expanduser(str(spec)))
    if path.is_dir():
        _check_required(path, required)
        return path.resolve()
    if str(spec).count("/") != 1 or path.is_absolute() or str(spec).startswith("."):
        raise InputError(spec, "model folder not found; " + OBTAIN_HINT.format(spec=SD21_BASE))
    from huggingface_hub import snapshot_download

    try:
        found = Path(snapshot_download(str(spec), cache_dir=str(hf_cache_dir()), local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError and friends: nothing cached
        raise InputError(spec, f"not in the local Hugging Face cache ({hf_cache_dir()}); " + OBTAIN_HINT.format(spec=spec)) from e
    _check_required(found, required)
    return found


def _check_required(folder: Path, required: Sequence[str]) -> None:
    missing = [r for r in required if not (folder / r).exists()]
    if missing:
        raise InputError(folder, f"incomplete model folder (missing {', '.join(missing)})")


def link_pretrained(spec: str | Path, out_dir: str | Path, source: str = "local", required: Sequence[str] | None = None) -> dict:
    """Write `out_dir/ipfacediff.json` pointing at the resolved pretrained folder (with weight hashes)."""
    folder = resolve_pretrained(spec, required) if required is not None else resolve_pretrained(spec)
    info = {"source": source, "weights": "pretrained", "spec": str(spec), "path": str(folder), "sha256": weight_hashes(folder)}
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / INFO_FILE, info)
    return info


def _follow(models_dir: str | Path, required: Sequence[str]) -> tuple[Path, dict]:
    """The folder holding the weights (following a pointer `ipfacediff.json`) and its info."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise InputError(models_dir, "model folder not found (run `dvc repro models`, or give a diffusers folder)")
    info_file = models_dir / INFO_FILE
    info: dict = {}
    if info_file.is_file():
        try:
            info = json.loads(info_file.read_text())
        except json.JSONDecodeError as e:
            raise InputError(info_file, f"corrupt model info ({e.msg}); rerun `dvc repro models`") from e
    folder = Path(info["path"]) if "path" in info else models_dir
    if not folder.is_dir():
        raise InputError(info_file, f"points at {folder}, which does not exist")
    _check_required(folder, required)
    if not info:
        info = {"source": "local", "weights": "unknown", "path": str(folder), "sha256": weight_hashes(folder)}
    return folder, info


# --------------------------------------------------------------------------- loading


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    if str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def resolve_dtype(spec: str | torch.dtype) -> torch.dtype:
    if isinstance(spec, torch.dtype):
        return spec
    if str(spec) not in _DTYPES:
        raise InputError(None, f"unknown dtype {spec!r}; expected one of {', '.join(_DTYPES)}")
    return _DTYPES[str(spec)]


def load_components(models_dir: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32) -> Components:
    """Load UNet, VAE, text encoder, tokenizer and a DDIM scheduler from a models folder (or pointer)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder, info = _follow(models_dir, required=SD_COMPONENTS)
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    loaders = {
        "unet": lambda: UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", torch_dtype=dtype, local_files_only=True),
        "vae": lambda: AutoencoderKL.from_pretrained(str(folder), subfolder="vae", torch_dtype=dtype, local_files_only=True),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder", torch_dtype=dtype, local_files_only=True),
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer", local_files_only=True),
        # SD 2.1-base ships a PNDM config; DDIM reads the same noise schedule from it
        "scheduler": lambda: DDIMScheduler.from_pretrained(str(folder), subfolder="scheduler", local_files_only=True),
    }
    loaded = {}
    for name, load in loaders.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded[name] = load()
        except Exception as e:
            raise InputError(folder / name, f"cannot load {name}: {_first_line(e)}") from e
    for name in ("unet", "vae", "text_encoder"):
        loaded[name] = loaded[name].to(device).eval().requires_grad_(False)
    return Components(**loaded, info=info)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# --------------------------------------------------------------------------- prompts and latents


class PromptTruncationWarning(UserWarning):
    """A prompt longer than the text encoder's 77 tokens; the message names the dropped words."""


def truncated_text(tokenizer, prompt: str) -> str:
    """The part of `prompt` the 77-token context drops ('' when it fits)."""
    ids = tokenizer(prompt, truncation=False, add_special_tokens=False).input_ids
    keep = tokenizer.model_max_length - 2  # BOS and EOS
    return tokenizer.decode(ids[keep:]) if len(ids) > keep else ""


@torch.no_grad()
def encode_prompt(components: Components, prompts: str | Sequence[str], allow_empty: bool = True) -> torch.Tensor:
    """Text embeddings (B, 77, D) of `prompts`; warns naming what is truncated beyond 77 tokens."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    tok = components.tokenizer
    for p in prompts:
        if not allow_empty and not p.strip():
            raise InputError(None, "empty prompt: say what the edit should be, e.g. -p 'a person wearing glasses'")
        dropped = truncated_text(tok, p)
        if dropped:
            warnings.warn(f"prompt longer than {tok.model_max_length} tokens; dropped: {dropped!r}", PromptTruncationWarning, stacklevel=2)
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    return components.text_encoder(ids.to(components.text_encoder.device))[0]


def uint8_to_tensor(frames) -> torch.Tensor:
    """(N, H, W, 3) uint8 (numpy or torch) -> (N, 3, H, W) float in [-1, 1]."""
    t = torch.as_tensor(frames)
    if t.ndim != 4 or t.shape[-1] != 3 or t.dtype != torch.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {tuple(t.shape)} {t.dtype}")
    return t.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_uint8(images: torch.Tensor):
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8 numpy."""
    return images.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode_images(components: Components, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """VAE posterior means of images (N, 3, H, W) in [-1, 1], times the scaling factor (deterministic)."""
    vae = components.vae
    s = components.vae_scale
    if images.shape[-1] % s or images.shape[-2] % s:
        raise ValueError(f"image size {tuple(images.shape[-2:])} is not a multiple of {s} (pad or crop first)")
    out = [vae.encode(b.to(vae.device, vae.dtype)).latent_dist.mean for b in images.split(batch_size)]
    return torch.cat(out) * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(components: Components, latents: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] from scaled latents (N, 4, h, w)."""
    vae = components.vae
    out = [vae.decode(b.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample for b in latents.split(batch_size)]
    return torch.cat(out).clamp(-1, 1)
