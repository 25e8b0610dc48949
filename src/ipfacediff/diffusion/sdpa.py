"""Which kernel `F.scaled_dot_product_attention` runs for the editor's attention on a device and dtype.

Every attention of the editor (the self-attention processors, diffusers' cross-attention) goes through
`scaled_dot_product_attention`, which picks a backend per call: a fused kernel (flash, memory-efficient,
cuDNN on CUDA; flash_for_cpu on the CPU) keeps no score matrix, while the math fallback decomposes
into bmm + softmax + bmm and materialises the (queries x keys) scores: at 512 px joint keyframe
attention that is K x 4096 keys per query, gigabytes per call. The choice happens inside the
dispatcher (`scaled_dot_product_attention` is a composite op), so it is observed where it lands: one
probe call under a TorchDispatchMode that records the aten ops it reaches.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

log = logging.getLogger(__name__)

# aten op the composite dispatches to -> kernel name (torch's SDPBackend naming)
FUSED_KERNELS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash_for_cpu",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}
MATH = "math"
# ops only the math decomposition reaches (it may also appear undecomposed on some builds)
MATH_OPS = {"_scaled_dot_product_attention_math", "_scaled_dot_product_attention_math_for_mps", "bmm", "_safe_softmax", "_softmax"}


class _OpNames(TorchDispatchMode):
    """Records the name of every aten op dispatched inside it (e.g. 'bmm', '_softmax')."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def kernel_of_ops(names: Sequence[str]) -> str:
    """The kernel a list of dispatched aten op names shows: the first fused kernel, else math."""
    for name in names:
        if name in FUSED_KERNELS:
            return FUSED_KERNELS[name]
    if any(name in MATH_OPS for name in names):
        return MATH
    raise ValueError(f"no attention kernel among the dispatched ops {list(names)}")


@torch.no_grad()
def dispatched_kernel(device: str | torch.device, dtype: torch.dtype, shape: Sequence[int]) -> str:
    """The kernel `F.scaled_dot_product_attention(q, q, q)` dispatches to for q of `shape`
    (batch, heads, tokens, head_dim) on `device` in `dtype`, under the current backend settings
    (e.g. inside `torch.nn.attention.sdpa_kernel`). Zeros: no random numbers are drawn."""
    q = torch.zeros(tuple(shape), device=device, dtype=dtype)
    with _OpNames() as ops:
        F.scaled_dot_product_attention(q, q, q)
    return kernel_of_ops(ops.names)


def self_attention_shape(unet: torch.nn.Module, latent_side: int | None = None) -> tuple[int, int, int, int]:
    """(1, heads, tokens, head_dim) of the UNet's first self-attention (`attn1`) at `latent_side`
    (default: the UNet's sample_size): the largest token count of the network."""
    side = latent_side or int(unet.config.sample_size)
    for name, module in unet.named_modules():
        if name.endswith("attn1") and hasattr(module, "heads"):
            heads = int(module.heads)
            return 1, heads, side * side, module.to_q.out_features // heads
    raise ValueError("the UNet has no self-attention layer (attn1)")


def check_sdpa(unet: torch.nn.Module, latent_side: int | None = None) -> dict:
    """{"kernel", "memory_efficient", "device", "dtype", "shape"} of the UNet's self-attention; warns
    naming the kernel when a CUDA edit would run the math fallback (it holds the whole score matrix)."""
    shape = self_attention_shape(unet, latent_side)
    device, dtype = unet.device, unet.dtype
    kernel = dispatched_kernel(device, dtype, shape)
    if kernel == MATH and device.type == "cuda":
        log.warning("scaled_dot_product_attention runs the %r kernel on %s in %s for shape %s: it materialises "
                    "the score matrix (memory grows with keyframes x tokens); check the enabled backends "
                    "(torch.backends.cuda.*_sdp_enabled, torch.nn.attention.sdpa_kernel), the dtype and the head dim",
                    kernel, device, str(dtype).removeprefix("torch."), list(shape))
    return {"kernel": kernel, "memory_efficient": kernel != MATH, "device": str(device),
            "dtype": str(dtype).removeprefix("torch."), "shape": list(shape)}
