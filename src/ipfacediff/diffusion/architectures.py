"""SD 2.1-base architecture configs (true size and the tiny variant with the same module names) and
its noise schedule: plain dicts for diffusers' UNet2DConditionModel / AutoencoderKL and transformers'
CLIPTextModel."""

from __future__ import annotations

from typing import Any


MAX_TOKENS = 77

# SD 2.1-base noise schedule (scheduler/scheduler_config.json of stabilityai/stable-diffusion-2-1-base);
# DDIM needs steps_offset=1 to match the training grid.
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
