"""Diffusion and CLIP models: build (tiny or true-size random weights), resolve (pretrained), load.

Every consumer (fine-tuning, inversion, editing, metrics) loads through `load_components` /
`load_clip_model`, whatever the weights are, so the sample profile exercises the paper profile's code.

This module builds, saves and loads the pipeline; the rest is split by concern and re-exported here:
architectures.py (SD 2.1-base configs, tiny variant, noise schedule), tokenizer.py (offline CLIP BPE),
hub.py (model folders, pointers, the local HF cache, weight hashes), device.py (device/dtype names),
text.py (prompt encoding), latents.py (frames <-> VAE latents), clip_model.py (the CLIP model),
random_init.py (platform-independent random weights of the built models).

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

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import InputError
from ..fsio import atomic_dir, write_json
from ..settings import ModelsSettings
from .architectures import (  # noqa: F401  (re-exported: models.py is the import point for builders)
    MAX_TOKENS,
    SCHEDULER_CONFIG,
    sd21_text_config,
    sd21_unet_config,
    sd21_vae_config,
    tiny_text_config,
    tiny_unet_config,
    tiny_vae_config,
)
from .clip_model import ClipComponents, load_clip_model  # noqa: F401
from .device import resolve_device, resolve_dtype  # noqa: F401
from .hub import (  # noqa: F401
    INFO_FILE,
    FP16_VARIANT_FILE,
    OBTAIN_HINT,
    SD21_BASE,
    SD_COMPONENTS,
    first_line,
    follow_pointer,
    hf_cache_dir,
    resolve_pretrained,
    weight_hashes,
)
from .latents import decode_latents, encode_images, tensor_to_uint8, uint8_to_tensor  # noqa: F401
from .text import PromptTruncationWarning, encode_prompt, truncated_text  # noqa: F401
from .tokenizer import build_clip_tokenizer, clip_bpe_path, write_clip_tokenizer_files  # noqa: F401

ModelsConfig = ModelsSettings  # params `models` (settings.py)


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

    from .random_init import init_random_weights

    unet = init_random_weights(UNet2DConditionModel(**unet_cfg), seed, "unet")  # same bytes on every machine
    vae = init_random_weights(AutoencoderKL(**vae_cfg), seed, "vae")
    text_encoder = init_random_weights(CLIPTextModel(CLIPTextConfig(**text_cfg)), seed, "text_encoder", "transformers")
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
    from .random_init import parameter_rng, round_significant

    small = torch.from_numpy(parameter_rng(seed, "vae/calibration").standard_normal((4, 3, 8, 8)).astype("float32"))
    images = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear").clamp(-1, 1)
    std = vae.encode(images).latent_dist.mean.std() * vae.config.scaling_factor
    c = round_significant(float(1.0 / std))  # float reductions above differ in the last bits between CPUs
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
            comps,
            tmp,
            source="tiny",
            note=f"random weights, SD 2.1-base block structure scaled down (seed {seed}); numbers from it are not results",
        )
    return info


def build_true_size(
    seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", sample_size: int = 512
) -> Components:
    """SD 2.1-base at true size (~865M UNet parameters) with random weights, for speed and memory work."""
    import tempfile

    with tempfile.TemporaryDirectory() as tok_dir:
        comps = _build(sd21_unet_config(sample_size // 8), sd21_vae_config(sample_size), sd21_text_config(), seed, Path(tok_dir), dtype)
    comps.info = {
        "source": "true_size",
        "weights": "random",
        "sha256": {"combined": f"true_size-random-seed{seed}"},
        "note": "random weights at SD 2.1-base size",
    }
    for m in (comps.unet, comps.vae, comps.text_encoder):
        m.to(device)
    return comps


def save_true_size(out_dir: str | Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict:
    with atomic_dir(out_dir) as tmp:
        comps = build_true_size(seed, dtype)
        return _save_pipeline(
            comps, tmp, source="true_size", note=f"random weights at SD 2.1-base size (seed {seed}); numbers from it are not results"
        )


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
        clip = link_pretrained(cfg.clip, out_dir / "clip", required=("config.json",), param="models.clip")
    return {"base": base, "clip": clip}


# --------------------------------------------------------------------------- CLIP (directional loss, scores)


def build_tiny_clip(out_dir: str | Path, seed: int = 0) -> dict:
    """Random-weight CLIPModel (vision + text) + the real CLIP tokenizer + CLIPImageProcessor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    text = dict(tiny_text_config(), projection_dim=32)
    vision = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16, projection_dim=32
    )
    with atomic_dir(out_dir) as tmp:
        from .random_init import init_random_weights

        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).eval()
        init_random_weights(model, seed, "clip", "transformers")
        model.save_pretrained(str(tmp), safe_serialization=True)
        build_clip_tokenizer(tmp / "_tok").save_pretrained(str(tmp))
        CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(str(tmp))
        shutil.rmtree(tmp / "_tok")
        info = {
            "source": "tiny",
            "weights": "random",
            "sha256": weight_hashes(tmp),
            "note": f"random-weight CLIP (seed {seed}); scores from it are not results",
        }
        write_json(tmp / INFO_FILE, info)
    return info


def link_pretrained(spec: str | Path, out_dir: str | Path, source: str = "local", required: Sequence[str] | None = None,
                    param: str = "models.pretrained") -> dict:
    """Write `out_dir/ipfacediff.json` pointing at the resolved pretrained folder (with weight hashes)."""
    folder = resolve_pretrained(spec, required, param) if required is not None else resolve_pretrained(spec, param=param)
    info = {"source": source, "weights": "pretrained", "spec": str(spec), "path": str(folder), "sha256": weight_hashes(folder)}
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / INFO_FILE, info)
    return info


# --------------------------------------------------------------------------- loading


def load_components(models_dir: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32) -> Components:
    """Load UNet, VAE, text encoder, tokenizer and a DDIM scheduler from a models folder (or pointer)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder, info = follow_pointer(models_dir, required=SD_COMPONENTS)
    auto, dtype, device = str(device) == "auto", resolve_dtype(dtype), resolve_device(device)
    if auto and device.type == "cpu" and dtype == torch.float16:
        # `device: auto` (paper profile) found no GPU: half precision on a CPU is emulated (several times
        # slower than float32) and some kernels lack it, so compute in float32 and say so
        warnings.warn("device auto found no GPU: models.dtype float16 -> float32 on the CPU", stacklevel=2)
        dtype = torch.float32
    # half the bytes to read when the repo ships fp16 files (SD 2.1-base does); same weights rounded
    variant = "fp16" if dtype == torch.float16 and (folder / FP16_VARIANT_FILE).is_file() else None
    kw = dict(torch_dtype=dtype, local_files_only=True, variant=variant)
    loaders = {
        "unet": lambda: UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", **kw),
        "vae": lambda: AutoencoderKL.from_pretrained(str(folder), subfolder="vae", **kw),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder", **kw),
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
            raise InputError(folder / name, f"cannot load {name}: {first_line(e)}") from e
    for name in ("unet", "vae", "text_encoder"):
        loaded[name] = loaded[name].to(device).eval().requires_grad_(False)
    return Components(**loaded, info=info)
