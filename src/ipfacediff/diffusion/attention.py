"""Self-attention processors for editing: per-frame attention, joint keyframe attention, and
nearest-neighbour propagation of the keyframes' attention outputs, plus PnP q/k injection.

One `EditAttnProcessor` per self-attention layer (`attn1` of every transformer block) of every
distinct UNet; cross-attention layers keep whatever processor is installed (stock, or the sliced one
from a memory option). LoRA branches share ONE UNet module, so a processor cannot tell the branches
apart by module: the pipeline sets `EditState.role` ("source" or "edit") and `EditState.mode`
("frame", "keyframes" or "propagate") before each UNet call, and every processor and hook reads it.

Joint attention: the queries of every keyframe attend to the keys/values of ALL keyframes. Viewing
the keyframe axis as part of the token axis, (G*K, S, C) -> (G, H, K*S, d), makes that one ordinary
attention per CFG group over shared keys/values: no copy of K/V per keyframe, no per-head loop. Query
chunks keep each `scaled_dot_product_attention` call's score block at (chunk x K*S), linear in the
number of keyframes.

Bounded keyframe attention (long videos, see pipeline.py): an "anchors" pass first runs a few anchor
frames with joint attention among themselves and keeps, per layer, the keys/values they used; each
keyframe group's queries then attend to its own keyframes' keys/values followed by the anchors', per
CFG group. The step state holds one window of keyframes (the group + the previous group's last one,
`EditState.carried`) instead of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .propagation import BlendPlan, correspondences, propagate

ROLES = ("off", "source", "edit")
MODES = ("frame", "keyframes", "propagate", "anchors")


# --------------------------------------------------------------------------- attention math


def chunked_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v over (..., L, d) tensors, `chunk` queries per SDPA call."""
    if q.shape[-2] <= chunk:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    return torch.cat([F.scaled_dot_product_attention(qc, k, v, scale=scale) for qc in q.split(chunk, dim=-2)], dim=-2)


def frame_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, chunk: int = 4096, scale: float | None = None
) -> torch.Tensor:
    """Ordinary multi-head self-attention of each frame; q, k, v (B, S, C) -> (B, S, C)."""
    B, S, C = q.shape
    split = lambda t: t.view(B, -1, heads, C // heads).transpose(1, 2)  # noqa: E731
    out = chunked_sdpa(split(q), split(k), split(v), chunk, scale)
    return out.transpose(1, 2).reshape(B, S, C)


def joint_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, groups: int = 1, chunk: int = 4096, scale: float | None = None
) -> torch.Tensor:
    """Keyframe-extended attention. q, k, v: (G*K, S, C), G independent groups (CFG halves) of K
    keyframes each. Every query of every keyframe attends to the K*S keys/values of its group.
    Returns (G*K, S, C)."""
    N, S, C = q.shape
    if N % groups:
        raise ValueError(f"batch {N} is not a multiple of {groups} groups")
    # (G, K, S, C) -> (G, K*S, H, d) -> (G, H, K*S, d): views, no copies
    split = lambda t: t.reshape(groups, -1, heads, C // heads).transpose(1, 2)  # noqa: E731
    out = chunked_sdpa(split(q), split(k), split(v), chunk, scale)
    return out.transpose(1, 2).reshape(N, S, C)


def cat_groups(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """(G*Ka, S, C), (G*Kb, S, C) -> (G*(Ka+Kb), S, C): per CFG group, a's frames then b's."""
    S, C = a.shape[1:]
    return torch.cat([a.reshape(groups, -1, S, C), b.reshape(groups, -1, S, C)], dim=1).reshape(-1, S, C)


# --------------------------------------------------------------------------- shared state


@dataclass
class EditState:
    """What the processors and hooks of every UNet read and write during one edit.

    Captured per layer during the source pass (identity branch on the inverted latents):
      `qk` (q, k at injected layers), `resnet` (injected resblock features), `kf_features` (every
      self-attention layer's input features of the keyframes) and `corr` (correspondences of the
      current batch's frames to their keyframes). Written by the edit pass: `kf_out` (keyframe
      attention outputs, (G*K, S, C) per layer) that propagation blends.
    Bounded keyframe attention adds `anchor_kv` (per layer, stack([k, v]) of the anchors, (2, G*A, S, C),
    written by the "anchors" edit pass, read by every keyframe edit pass of the step) and `carried`
    (the keyframe data already held is the previous window's last keyframe: new keyframes append).
    """

    role: str = "off"
    mode: str = "frame"
    groups: int = 2  # CFG groups in the edit batch ([uncond, cond] -> 2)
    inject_qk: bool = False  # this step injects source q/k (first pnp_attn_t of the steps)
    inject_f: bool = False  # this step injects resblock features (first pnp_f_t)
    chunk: int = 4096  # queries per attention / nearest-neighbour call
    keyframes: torch.Tensor | None = None  # positions (in the edited clip) of this step's keyframes
    plan: BlendPlan | None = None  # eq. 4 plan of the current propagation batch
    qk: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    resnet: dict[str, torch.Tensor] = field(default_factory=dict)
    kf_features: dict[str, torch.Tensor] = field(default_factory=dict)
    kf_out: dict[str, torch.Tensor] = field(default_factory=dict)
    # one `kf_out` per prompt when several prompts share the source pass; the pipeline points
    # `kf_out` at the current prompt's before each edit pass
    kf_outs: list[dict[str, torch.Tensor]] = field(default_factory=list)
    corr: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # bounded mode: anchors' keys/values per layer (one dict per prompt in `anchor_kvs`, pointed at
    # like `kf_out`), and whether `kf_features`/`kf_out` hold a carried keyframe to append to
    anchor_kv: dict[str, torch.Tensor] = field(default_factory=dict)
    anchor_kvs: list[dict[str, torch.Tensor]] = field(default_factory=list)
    carried: bool = False
    step: int = 0  # sampling step index (for observers)
    # observer(state, layer, q, k): sees the q/k each self-attention actually used (None when the
    # output is propagated instead of computed); for tests and debugging
    observer: Callable[..., None] | None = None

    def set(self, role: str, mode: str) -> None:
        if role not in ROLES or mode not in MODES:
            raise ValueError(f"bad pass ({role!r}, {mode!r})")
        self.role, self.mode = role, mode

    def end_pass_pair(self) -> None:
        """Drop what one source+edit pair captured (keyframe data lives for the whole step)."""
        self.qk.clear()
        self.resnet.clear()
        self.corr.clear()

    def keep_last_keyframe(self) -> None:
        """End of a bounded window: keep only the last held keyframe's features and outputs (the
        next window's carried keyframe), copied so the window's storage is freed."""
        for name, f in self.kf_features.items():
            self.kf_features[name] = f[-1:].clone()
        for d in self.kf_outs:
            for name, out in d.items():
                d[name] = out.view(self.groups, -1, *out.shape[1:])[:, -1].clone()
        self.carried = bool(self.kf_features)

    def end_step(self) -> None:
        self.end_pass_pair()
        self.kf_features.clear()
        self.kf_out.clear()
        for d in (*self.kf_outs, self.anchor_kv, *self.anchor_kvs):
            d.clear()
        self.keyframes = self.plan = None
        self.carried = False
        self.role = "off"


def expand_groups(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, ...) -> (groups*B, ...): the source tensor for every CFG group of the edit batch."""
    return t if groups == 1 else t.repeat(groups, *([1] * (t.ndim - 1)))


# --------------------------------------------------------------------------- processor


class EditAttnProcessor:
    """Self-attention processor: capture (source pass), inject / joint-attend / propagate (edit pass).

    `inner` is the processor that was installed before (stock or sliced); it runs whenever the state
    is "off" (the UNet used outside an edit) and for anything that is not self-attention.
    """

    def __init__(self, name: str, state: EditState, inner, inject_qk: bool = False):
        self.name = name
        self.state = state
        self.inner = inner
        self.inject_qk = inject_qk  # this layer is one of PnP's q/k injection layers

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        st = self.state
        if st.role == "off" or encoder_hidden_states is not None or hidden_states.ndim != 3:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if attention_mask is not None:
            raise ValueError(f"{self.name}: self-attention masks are not supported while editing")
        if st.role == "source":
            out = self._source(attn, hidden_states)
        elif st.mode == "propagate":
            out = self._propagated(hidden_states)
        else:
            out = self._edit(attn, hidden_states)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    def _qkv(self, attn, x):
        return attn.to_q(x), attn.to_k(x), attn.to_v(x)

    def _out(self, attn, x):
        return attn.to_out[1](attn.to_out[0](x))

    def _source(self, attn, x):
        st = self.state
        if st.mode == "keyframes":
            st.kf_features[self.name] = torch.cat([st.kf_features[self.name], x]) if st.carried else x
        elif st.mode == "propagate":
            st.corr[self.name] = correspondences(x, st.kf_features[self.name], st.plan, st.keyframes, st.chunk)
        q, k, v = self._qkv(attn, x)
        if self.inject_qk and st.inject_qk and st.mode != "propagate":
            st.qk[self.name] = (q, k)
        if st.observer is not None:
            st.observer(st, self.name, q, k)
        return self._out(attn, frame_attention(q, k, v, attn.heads, st.chunk, attn.scale))

    def _edit(self, attn, x):
        st = self.state
        q, k, v = self._qkv(attn, x)
        if self.inject_qk and st.inject_qk:
            q_src, k_src = st.qk[self.name]
            q, k = expand_groups(q_src, st.groups), expand_groups(k_src, st.groups)
        if st.mode == "anchors":  # bounded mode: the anchors attend among themselves; keep what they used
            st.anchor_kv[self.name] = torch.stack([k, v])
        elif st.mode == "keyframes" and st.anchor_kv:  # bounded mode: own keyframes' keys, then the anchors'
            kv = st.anchor_kv[self.name]
            k, v = cat_groups(k, kv[0], st.groups), cat_groups(v, kv[1], st.groups)
        if st.observer is not None:
            st.observer(st, self.name, q, k)
        if st.mode in ("keyframes", "anchors"):
            out = self._out(attn, joint_attention(q, k, v, attn.heads, st.groups, st.chunk, attn.scale))
            if st.mode == "keyframes":
                st.kf_out[self.name] = cat_groups(st.kf_out[self.name], out, st.groups) if st.carried else out
            return out
        return self._out(attn, frame_attention(q, k, v, attn.heads, st.chunk, attn.scale))

    def _propagated(self, x):
        st = self.state
        kf_out = st.kf_out[self.name]
        G = st.groups
        values = kf_out.view(G, -1, *kf_out.shape[1:])
        idx_prev, idx_next = st.corr[self.name]
        out = propagate(values, st.plan, idx_prev, idx_next)  # (G, B, S, C)
        if st.observer is not None:
            st.observer(st, self.name, None, None)
        return out.reshape(-1, *out.shape[2:]).to(x.dtype)


# --------------------------------------------------------------------------- installation


def self_attention_names(unet) -> list[str]:
    """Processor keys of every self-attention layer (attn1 of each transformer block)."""
    return [k for k in unet.attn_processors if k.endswith("attn1.processor")]


def install_processors(unet, state: EditState, qk_layers: set[str]) -> dict:
    """Put an EditAttnProcessor on every self-attention layer of `unet` (others keep theirs).

    Returns the processors that were there before (to restore). Call AFTER any memory option
    (attention slicing, xformers): those replace processors wholesale.
    """
    before = dict(unet.attn_processors)
    procs = dict(before)
    for name in self_attention_names(unet):
        layer = name[: -len(".processor")]
        procs[name] = EditAttnProcessor(layer, state, before[name], inject_qk=layer in qk_layers)
    unet.set_attn_processor(procs)  # empties `procs`; `before` is ours
    return before


def assert_installed(unet, state: EditState) -> None:
    """Every self-attention layer runs an EditAttnProcessor bound to `state`."""
    procs = unet.attn_processors  # one walk of the module tree (self_attention_names would walk it again)
    missing = [k for k, proc in procs.items()
               if k.endswith("attn1.processor") and not (isinstance(proc, EditAttnProcessor) and proc.state is state)]
    if missing:
        raise RuntimeError(f"edit attention processors were replaced on {len(missing)} layer(s), e.g. {missing[0]} "
                           "(apply memory options before installing processors)")
