"""Keyframe sampling, nearest-neighbour correspondences and the paper's eq. 4 blend (pure functions).

TokenFlow propagates the keyframes' self-attention outputs to every frame through nearest-neighbour
correspondences found in the ORIGINAL video's diffusion features. IP-FaceDiff's eq. 4 blends the
nearest past and nearest future keyframes by temporal distance:

    out_i = w_prev * A[k_prev][nn_prev(x)] + w_next * A[k_next][nn_next(x)],
    w_prev = d_next / (d_prev + d_next),  w_next = d_prev / (d_prev + d_next),

with d_prev = i - k_prev, d_next = k_next - i. A keyframe is its own past and future (weight 1 on
itself, identity correspondences); a frame outside the keyframes' span uses its one neighbour.
TokenFlow's code instead weights batch centres through a sigmoid and only looks one batch back;
this follows the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def sample_keyframes(n_frames: int, interval: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One uniformly random frame from every block of `interval` consecutive frames (the last block
    may be shorter), sorted. Re-drawn by the caller at every step, as TokenFlow does."""
    if n_frames < 1 or interval < 1:
        raise ValueError(f"need n_frames >= 1 and interval >= 1, got {n_frames}, {interval}")
    starts = torch.arange(0, n_frames, interval)
    sizes = (n_frames - starts).clamp(max=interval)
    device = generator.device if generator is not None else "cpu"
    u = torch.rand(len(starts), generator=generator, device=device).cpu()
    return starts + (u * sizes).long().clamp(max=sizes - 1)


@dataclass
class BlendPlan:
    """For each frame: positions (into the keyframe list) of its past and future keyframes, and
    their eq. 4 weights. `prev == next` with `w_prev == 1` where one keyframe serves alone."""

    frames: torch.Tensor  # (B,) frame indices
    prev: torch.Tensor  # (B,) long, position in keyframes
    next: torch.Tensor  # (B,) long
    w_prev: torch.Tensor  # (B,) float64
    w_next: torch.Tensor  # (B,) float64

    def __getitem__(self, sel) -> BlendPlan:
        return BlendPlan(self.frames[sel], self.prev[sel], self.next[sel], self.w_prev[sel], self.w_next[sel])

    def __len__(self) -> int:
        return len(self.frames)


def blend_plan(frames: torch.Tensor, keyframes: torch.Tensor) -> BlendPlan:
    """Eq. 4: nearest past/future keyframe of every frame and weights by temporal distance."""
    frames = torch.as_tensor(frames, dtype=torch.long)
    keyframes = torch.as_tensor(keyframes, dtype=torch.long)
    if len(keyframes) == 0 or bool((keyframes[1:] <= keyframes[:-1]).any()):
        raise ValueError("keyframes must be a non-empty strictly increasing sequence")
    # position of the last keyframe <= frame, and of the first keyframe >= frame
    prev = torch.searchsorted(keyframes, frames, right=True) - 1
    nxt = torch.searchsorted(keyframes, frames, right=False)
    before, after = prev < 0, nxt >= len(keyframes)
    prev = torch.where(before, nxt, prev)
    nxt = torch.where(after, prev, nxt)
    d_prev = (frames - keyframes[prev]).double()
    d_next = (keyframes[nxt] - frames).double()
    total = d_prev + d_next
    single = (prev == nxt) | (total == 0)
    w_prev = torch.where(single, torch.ones_like(total), d_next / total.clamp(min=1))
    w_next = 1.0 - w_prev
    return BlendPlan(frames, prev, nxt, w_prev, w_next)


def nearest_neighbours(query: torch.Tensor, keys: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """For each token of each query frame, the index of the most cosine-similar token of the
    corresponding key frame. query, keys: (B, S, D) -> (B, S) long. Chunked over query tokens so
    the similarity matrix never exceeds (B, chunk, S); computed in float32 at least."""
    dtype = torch.promote_types(query.dtype, torch.float32)
    k = torch.nn.functional.normalize(keys.to(dtype), dim=-1)
    out = []
    for q in query.split(chunk, dim=1):
        q = torch.nn.functional.normalize(q.to(dtype), dim=-1)
        out.append(torch.bmm(q, k.transpose(1, 2)).argmax(dim=-1))
    return torch.cat(out, dim=1)


def gather_tokens(values: torch.Tensor, positions: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (G, K, S, D), positions (B,), index (B, S) -> (G, B, S, D):
    out[g, b, s] = values[g, positions[b], index[b, s]]."""
    G, _, _, D = values.shape
    B, S = index.shape
    picked = values[:, positions]  # (G, B, S_kf, D)
    return picked.gather(2, index[None, :, :, None].expand(G, B, S, D))


def propagate(values: torch.Tensor, plan: BlendPlan, idx_prev: torch.Tensor, idx_next: torch.Tensor) -> torch.Tensor:
    """Eq. 4 blend of the keyframes' outputs `values` (G, K, S, D) for the frames of `plan`,
    through correspondences idx_prev/idx_next (B, S) -> (G, B, S, D)."""
    w_prev = plan.w_prev.to(values.device, values.dtype)[None, :, None, None]
    w_next = plan.w_next.to(values.device, values.dtype)[None, :, None, None]
    out = gather_tokens(values, plan.prev.to(values.device), idx_prev) * w_prev
    two = plan.w_next > 0  # frames with a second keyframe; the rest are exact copies of one
    if bool(two.any()):
        out = out + gather_tokens(values, plan.next.to(values.device), idx_next) * w_next
    return out


def correspondences(
    features: torch.Tensor, kf_features: torch.Tensor, plan: BlendPlan, keyframes: torch.Tensor, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour token indices (B, S) of each frame's features (B, S, D) in its past and
    future keyframes' features (K, S, D). A keyframe maps to itself exactly (identity indices)."""
    B, S, _ = features.shape
    ident = torch.arange(S, device=features.device).expand(B, S)
    is_kf = (plan.frames.to(keyframes.device)[:, None] == keyframes[None]).any(1).to(features.device)
    idx_prev = nearest_neighbours(features, kf_features[plan.prev.to(kf_features.device)], chunk)
    # rows with a second keyframe, as integer positions computed on the host from the plan: no
    # device-side boolean mask, so shapes never depend on device data (meta-device rehearsal)
    two = (plan.w_next > 0).nonzero().squeeze(1)
    idx_next = idx_prev.clone()
    if len(two):
        rows = two.to(features.device)
        idx_next[rows] = nearest_neighbours(features[rows], kf_features[plan.next[two].to(kf_features.device)], chunk)
    keep = is_kf[:, None]
    return torch.where(keep, ident, idx_prev), torch.where(keep, ident, idx_next)


# --------------------------------------------------------------------------- bounded keyframe attention


def anchor_frames(n_frames: int, anchors: int) -> torch.Tensor:
    """`anchors` frames evenly spaced over the clip, the same at every step (no random draw): the
    centre of each of A equal segments, a_i = floor((2i + 1) N / (2A)), i = 0..A-1. Consecutive
    anchors differ by N/A +- 1 >= 1 frames when A <= N, so they are distinct and increasing."""
    if not 1 <= anchors <= n_frames:
        raise ValueError(f"need 1 <= anchors <= n_frames, got {anchors} anchors for {n_frames} frames")
    i = torch.arange(anchors)
    return (2 * i + 1) * n_frames // (2 * anchors)


@dataclass
class KeyframeWindow:
    """One window of bounded keyframe attention: keyframe group g (positions start..end-1 of the
    step's keyframe list, computed in this window's keyframe pass), the keyframes it holds
    (`held_start`..end-1: the group plus the previous group's last keyframe, carried over), and the
    non-keyframes it propagates (`rows` into the step's non-keyframe list, `plan` their eq. 4 blend
    with prev/next as positions into the held keyframes)."""

    group: int
    held_start: int
    start: int
    end: int
    rows: torch.Tensor
    plan: BlendPlan

    @property
    def carried(self) -> bool:
        return self.held_start < self.start


def keyframe_windows(plan: BlendPlan, n_keyframes: int, group_size: int) -> list[KeyframeWindow]:
    """Split one step's keyframes into contiguous groups of at most G = `group_size` and its
    non-keyframes (blend `plan` over all keyframes) by the group of their NEXT keyframe:

        group(k) = floor(k / G) for keyframe position k,   window(f) = group(next(f)).

    A frame's previous keyframe is next(f) - 1 or next(f) itself, so it lies in the same group or is
    the previous group's last keyframe: each window needs its group's keyframes plus that one
    (held_start = max(gG - 1, 0)), and the blend weights are the global plan's. Keyframe i is drawn
    from frames [i x interval, (i+1) x interval), so group boundaries sit at multiples of
    G x keyframe_interval in frame space. With G >= K this is one window: the plan unchanged."""
    if group_size < 1 or n_keyframes < 1:
        raise ValueError(f"need group_size >= 1 and n_keyframes >= 1, got {group_size}, {n_keyframes}")
    owner = plan.next // group_size
    windows = []
    for g, start in enumerate(range(0, n_keyframes, group_size)):
        end, held = min(start + group_size, n_keyframes), max(start - 1, 0)
        rows = (owner == g).nonzero().squeeze(1)
        p = plan[rows]
        windows.append(KeyframeWindow(g, held, start, end, rows, BlendPlan(p.frames, p.prev - held, p.next - held, p.w_prev, p.w_next)))
    return windows
