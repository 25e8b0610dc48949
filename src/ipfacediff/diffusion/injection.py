"""Plug-and-play identity guidance: the identity branch's features injected into the edit pass.

PnP (Tumanyan et al., CVPR 2023) as TokenFlow (Geyer et al., ICLR 2024; its tokenflow_utils.py and PnP config) uses it on SD 2.1:
  - self-attention q and k (not v) of decoder attention blocks 4-11 = up_blocks[1].attentions[1,2],
    up_blocks[2].attentions[0,1,2], up_blocks[3].attentions[0,1,2], during the first `pnp_attn_t`
    of the sampling steps (done by EditAttnProcessor, see attention.py);
  - the residual features of up_blocks[1].resnets[1] during the first `pnp_f_t` of the steps.
    PnP's code replaces the residual branch's output (after conv2, before the skip connection is
    added), so the edit keeps its own skip input; a forward hook on that block's `conv2` does exactly
    that without touching `forward`.
In IP-FaceDiff the source is the identity branch on the inverted latents and the target is the
directional branch: the injected tensors are the identity branch's.
"""

from __future__ import annotations

import torch

from .attention import EditState, expand_groups

PNP_ATTN_BLOCKS = {1: (1, 2), 2: (0, 1, 2), 3: (0, 1, 2)}  # up_blocks index -> attentions indices
PNP_RESNET = "up_blocks.1.resnets.1"
PNP_RESNET_HOOK = PNP_RESNET + ".conv2"


def pnp_attention_layers(unet) -> set[str]:
    """Module names of the self-attention layers that get q/k injection (decoder blocks 4-11)."""
    names = set()
    for up, attns in PNP_ATTN_BLOCKS.items():
        for a in attns:
            block = unet.up_blocks[up].attentions[a]
            for t in range(len(block.transformer_blocks)):
                names.add(f"up_blocks.{up}.attentions.{a}.transformer_blocks.{t}.attn1")
    return names


def injection_steps(n_steps: int, fraction: float) -> int:
    """How many leading sampling steps inject (TokenFlow: int(n_steps * fraction))."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"injection fraction must be in [0, 1], got {fraction}")
    return int(n_steps * fraction)


class ResnetInjectionHook:
    """Forward hook: source pass stores the output, edit pass replaces its output with it."""

    def __init__(self, name: str, state: EditState):
        self.name = name
        self.state = state

    def __call__(self, module, args, output):
        st = self.state
        if st.role == "off" or not st.inject_f:
            return None
        if st.role == "source":
            st.resnet[self.name] = output
            return None
        source = st.resnet[self.name]
        return expand_groups(source, st.groups).to(output.dtype)


def install_resnet_hook(unet, state: EditState) -> torch.utils.hooks.RemovableHandle:
    module = unet.get_submodule(PNP_RESNET_HOOK)
    return module.register_forward_hook(ResnetInjectionHook(PNP_RESNET_HOOK, state))
