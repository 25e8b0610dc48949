"""Exact or bounded keyframe attention: the stored-state estimate and the switching rule (pure functions).

Exact TokenFlow attention keeps, for every self-attention layer l and every keyframe of the step,
the layer's input features (source pass, for the correspondences) and its outputs for each CFG group
of each prompt (edit pass, what propagation blends):

    exact_bytes = K x sum_l S_l C_l x (1 + groups x P) x itemsize                              (1)

with K keyframes per step, S_l tokens and C_l channels of layer l, P prompts sharing the source
pass. That grows with the video (K = ceil(N / keyframe_interval)): 69 MB per keyframe for SD
2.1-base at 512 px in 16-bit with guidance, 10.4 GB at 1200 frames.

Bounded attention (Fairy-style anchors + TokenFlow keyframe groups, see pipeline.py) holds one
window at a time: a group's G keyframes plus the previous group's last keyframe, and the anchors'
keys and values (A anchors, each CFG group of each prompt):

    bounded_bytes = (G + 1) x sum_l S_l C_l x (1 + groups x P) x itemsize
                    + A x sum_l S_l C_l x 2 x groups x P x itemsize                            (2)

independent of the video's length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InputError

REQUESTS = ("auto", "exact", "bounded")
GIB = 1024**3


def _per_block(value: Any, n_blocks: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n_blocks


def self_attention_shapes(unet_config: Mapping[str, Any], latent_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """(S_l, C_l) of every self-attention layer of a diffusers UNet2DConditionModel with config
    `unet_config` on latents of `latent_hw`: tokens are the block's resolution (the latent halved,
    rounded up, after each down block but the last: stride-2 convolutions with padding 1), channels
    its `block_out_channels`. Down block i holds layers_per_block[i] attentions, up block j (the
    reversed list) one more, the cross-attention mid block one; each attention holds
    transformer_layers_per_block transformer blocks, each one self-attention."""
    boc = list(unet_config["block_out_channels"])
    n = len(boc)
    down_types, up_types = list(unet_config["down_block_types"]), list(unet_config["up_block_types"])
    layers = _per_block(unet_config.get("layers_per_block", 2), n)
    depth = _per_block(unet_config.get("transformer_layers_per_block", 1) or 1, n)
    if any(isinstance(d, (list, tuple)) for d in depth):
        raise ValueError("per-layer transformer depths (SDXL refiner style) are not supported")
    h, w = latent_hw
    tokens = []
    for _ in range(n):
        tokens.append(h * w)
        h, w = -(-h // 2), -(-w // 2)
    shapes: list[tuple[int, int]] = []
    for i, kind in enumerate(down_types):
        if "CrossAttn" in kind:
            shapes += [(tokens[i], boc[i])] * (layers[i] * depth[i])
    if "CrossAttn" in (unet_config.get("mid_block_type") or "UNetMidBlock2DCrossAttn"):
        shapes += [(tokens[-1], boc[-1])] * depth[-1]
    for j, kind in enumerate(up_types):
        i = n - 1 - j  # the down block this up block mirrors
        if "CrossAttn" in kind:
            shapes += [(tokens[i], boc[i])] * ((layers[i] + 1) * depth[i])
    return shapes


def keyframe_state_bytes(shapes: list[tuple[int, int]], keyframes: int, groups: int, prompts: int, itemsize: int) -> int:
    """Eq. (1): bytes of keyframe features + each prompt's per-CFG-group outputs for `keyframes`."""
    return keyframes * sum(s * c for s, c in shapes) * (1 + groups * prompts) * itemsize


def anchor_state_bytes(shapes: list[tuple[int, int]], anchors: int, groups: int, prompts: int, itemsize: int) -> int:
    """Second term of eq. (2): the anchors' keys and values, per CFG group and prompt."""
    return anchors * sum(s * c for s, c in shapes) * 2 * groups * prompts * itemsize


@dataclass(frozen=True)
class KeyframeAttentionChoice:
    """Which keyframe attention one edit uses, why, and what it was estimated to hold."""

    requested: str
    used: str  # "exact" | "bounded" | "none" (a method without keyframes)
    reason: str
    group_size: int
    anchors: int
    memory_gib: float
    estimated_exact_gib: float | None  # None where the method has no keyframes
    estimated_bounded_gib: float | None
    groups: int  # keyframe groups per step (1 in exact mode)

    @property
    def bounded(self) -> bool:
        return self.used == "bounded"


def choose_keyframe_attention(requested: str, keyframes: int, group_size: int, anchors: int, memory_gib: float,
                              exact_bytes: int, bounded_bytes: int) -> KeyframeAttentionChoice:
    """The switching rule. K = `keyframes` per step, G = `group_size`.

    - exact: exact.
    - bounded: bounded if K > G, else exact (one group would hold every keyframe: the same attention).
    - auto: exact while eq. (1) fits `memory_gib`, else bounded (if K > G).
    Bounded (requested or chosen by auto) whose eq. (2) does not fit `memory_gib`, and auto where
    neither fits, raise a one-line InputError naming `edit.keyframe_memory_gib`."""
    if requested not in REQUESTS:
        raise InputError(None, f"edit.keyframe_attention: {requested!r} (expected one of {', '.join(REQUESTS)})")
    budget = memory_gib * GIB
    exact_gib, bounded_gib = round(exact_bytes / GIB, 4), round(bounded_bytes / GIB, 4)

    def pick(used: str, reason: str) -> KeyframeAttentionChoice:
        groups = math.ceil(keyframes / group_size) if used == "bounded" else 1
        return KeyframeAttentionChoice(requested, used, reason, group_size, anchors, memory_gib, exact_gib, bounded_gib, groups)

    def too_big(what: str) -> InputError:
        return InputError(None, f"edit.keyframe_memory_gib: {memory_gib} GiB cannot hold {what} "
                           f"(estimated {bounded_gib} GiB for {group_size} keyframes per group + {anchors} anchors): "
                           "raise it or lower edit.keyframe_group_size / edit.keyframe_anchors")

    if requested == "exact":
        return pick("exact", "requested")
    if requested == "auto" and exact_bytes <= budget:
        return pick("exact", f"exact keyframe state {exact_gib} GiB fits edit.keyframe_memory_gib {memory_gib}")
    if keyframes <= group_size:
        if requested == "auto":
            raise too_big("the exact keyframe state of this video")
        return pick("exact", f"{keyframes} keyframes per step fit one group of {group_size}: bounded equals exact")
    if bounded_bytes > budget:
        raise too_big("one keyframe group and the anchors")
    if requested == "bounded":
        return pick("bounded", "requested")
    return pick("bounded", f"exact keyframe state {exact_gib} GiB exceeds edit.keyframe_memory_gib {memory_gib}")


def resolve_keyframe_attention(unet_config: Mapping[str, Any], latent_hw: tuple[int, int], n_frames: int, keyframe_interval: int,
                               requested: str, group_size: int, anchors: int, memory_gib: float, groups: int, prompts: int,
                               itemsize: int) -> KeyframeAttentionChoice:
    """The switching rule on eq. (1)-(2) estimates for one video of `n_frames` frames: what the editor
    runs (pipeline) and what the planner costs (plan.py) from the same numbers. K = one keyframe per
    block of `keyframe_interval` frames; bounded mode stores one group + the carried keyframe + anchors."""
    shapes = self_attention_shapes(unet_config, latent_hw)
    K = -(-n_frames // keyframe_interval)
    exact = keyframe_state_bytes(shapes, K, groups, prompts, itemsize)
    bounded = (keyframe_state_bytes(shapes, min(group_size + 1, K), groups, prompts, itemsize)
               + anchor_state_bytes(shapes, anchors, groups, prompts, itemsize))
    return choose_keyframe_attention(requested, K, group_size, anchors, memory_gib, exact, bounded)
