"""Temporal consistency: flow-based warp error (paper Table 3).

For each consecutive pair (t, t+1): optical flow t+1 -> t (backward) and t -> t+1 (forward); frame t
is backward-warped onto t+1 (bilinear) and compared with frame t+1 over the pixels that are not
occluded. Occlusion: forward-backward consistency (Sundaram et al. 2010, as Ruder et al. 2016 and
Lai et al. 2018 use it): pixel x of t+1 is kept when
    |f_fw(x + f_bw(x)) + f_bw(x)|^2 < 0.01 (|f_fw(x + f_bw(x))|^2 + |f_bw(x)|^2) + 0.5
and x + f_bw(x) lies inside frame t.

Value scale (stated because the paper does not give one): E_warp of Lai et al. 2018, the squared
L2 distance over RGB in [0, 1], averaged over kept pixels and then over frame pairs, reported x 1000
(`WARP_SCALE`). On real footage this puts the original clips where the paper's column is: 512 px
aligned crops of the shared media at 10 fps score 0.16-0.34 with DIS flow (paper: 0.238-0.463).
Other scales give no overlap (mean |diff| in [0, 255]: 1.2-2.0; mean L2 in [0, 1]: 0.009-0.015).

Flow comes from the edited video itself, or (`source=`, the usual protocol for edits) from the
original video: an edit should move like its source, so the source's motion is what it is warped by.
A known property of warp error: it rewards blur and static output (a constantly blurred video scores
lower than its original); read it beside the identity and CLIP metrics.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

WARP_SCALE = 1000.0
FB_ALPHA, FB_BETA = 0.01, 0.5
RAFT_MIN_SIDE = 128
RAFT_FILES = {"raft_large": "raft_large_C_T_SKHT_V2-ff5fadd5.pth", "raft_small": "raft_small_C_T_V2-01064c6d.pth"}


# ------------------------------------------------------------------------------------------ flow
class DISFlow:
    """OpenCV DIS optical flow (no weights; deterministic) on grayscale frames."""

    name = "dis"

    def __init__(self, preset: str = "medium"):
        import cv2

        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        self.preset = preset
        self.description = f"OpenCV DIS optical flow (preset {preset})"
        self._dis = cv2.DISOpticalFlow_create(presets[preset])

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow (N, H, W, 2) from a[i] to b[i]: a[i](x) ~ b[i](x + flow(x))."""
        import cv2

        gray = lambda im: cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY)  # noqa: E731
        return np.stack([self._dis.calc(gray(x), gray(y), None) for x, y in zip(a, b)]).astype(np.float32)


class RAFTFlow:
    """torchvision RAFT (large or small) with a state dict from a local path."""

    name = "raft"

    def __init__(self, weights: str | Path, variant: str = "raft_large", device: str = "cpu", iters: int = 12):
        import torch
        from torchvision.models import optical_flow

        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(path, f"RAFT weights not found (torchvision's {RAFT_FILES.get(variant, variant)})")
        if variant not in RAFT_FILES:
            raise InputError(None, f"RAFT variant must be one of {', '.join(RAFT_FILES)}, got {variant!r}")
        self.model = getattr(optical_flow, variant)(weights=None, progress=False)
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model.eval().to(device)
        self.device, self.iters = device, iters
        from ..recognition import weights_sha256

        self.description = f"torchvision {variant} ({path.name}, sha256 {weights_sha256(path)[:12]}, {iters} iters)"

    def __call__(self, a: np.ndarray, b: np.ndarray, batch: int = 8) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        h, w = a.shape[1:3]
        # RAFT's correlation pyramid needs >= 128 px sides: smaller frames (64 px sample crops) are
        # upsampled by an integer factor and the flow scaled back down
        k = max(1, math.ceil(RAFT_MIN_SIDE / min(h, w)))
        H, W = h * k, w * k
        ph, pw = (-H) % 8, (-W) % 8  # and sides divisible by 8

        def prep(x):
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            if k > 1:
                t = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)
            return F.pad(t, (0, pw, 0, ph), mode="replicate").to(self.device)

        out = []
        with torch.inference_mode():
            for i in range(0, len(a), batch):
                flow = self.model(prep(a[i:i + batch]), prep(b[i:i + batch]), num_flow_updates=self.iters)[-1]
                flow = flow[:, :, :H, :W]
                if k > 1:
                    flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False) / k
                out.append(flow.permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def default_raft_path(variant: str = "raft_large") -> Path:
    home = os.environ.get("TORCH_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(home).expanduser() / "hub" / "checkpoints" / RAFT_FILES[variant]


def flow_estimator(kind: str = "dis", raft_weights: str | Path | None = None, device: str = "cpu"):
    """`raft`: RAFT with the weights at `raft_weights` (or torch hub's cache), missing -> InputError
    naming the file; `auto`: RAFT when those weights exist, else DIS (logged); `dis`: OpenCV DIS."""
    if kind == "dis":
        return DISFlow()
    if kind not in ("raft", "auto"):
        raise InputError(None, f"metrics.flow must be 'raft', 'auto' or 'dis', got {kind!r}")
    path = Path(raft_weights).expanduser() if raft_weights else default_raft_path()
    if path.is_file():
        variant = "raft_small" if "small" in path.name else "raft_large"
        return RAFTFlow(path, variant, device)
    if kind == "raft":
        raise InputError(path, f"RAFT weights not found (metrics.flow: raft): put torchvision's {RAFT_FILES['raft_large']} "
                               f"there (torchvision.models.optical_flow.Raft_Large_Weights.C_T_SKHT_V2) or set "
                               f"metrics.raft_weights; metrics.flow: auto falls back to DIS")
    est = DISFlow()
    est.description += f" (RAFT requested, weights not found at {path})"
    log.warning("RAFT weights not found at %s: using OpenCV DIS flow", path)
    return est


# ------------------------------------------------------------------------------------------ warp
def backward_warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample `image` at x + flow(x) (bilinear): (warped, inside) with inside = sample point in frame."""
    import cv2

    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    warped = cv2.remap(np.ascontiguousarray(image), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return warped, inside


def consistency_mask(flow_fw: np.ndarray, flow_bw: np.ndarray) -> np.ndarray:
    """Non-occluded pixels of frame t+1 (forward-backward check, see module docstring)."""
    fw_at, inside = backward_warp(flow_fw, flow_bw)
    err = ((fw_at + flow_bw) ** 2).sum(-1)
    bound = FB_ALPHA * ((fw_at**2).sum(-1) + (flow_bw**2).sum(-1)) + FB_BETA
    return (err < bound) & inside


def pair_warp_error(frame_t: np.ndarray, frame_t1: np.ndarray, flow_fw: np.ndarray, flow_bw: np.ndarray) -> tuple[float, float]:
    """(E_warp x WARP_SCALE, fraction of pixels kept) for one pair; uint8 RGB frames."""
    a = frame_t.astype(np.float32) / 255.0
    b = frame_t1.astype(np.float32) / 255.0
    warped, _ = backward_warp(a, flow_bw)
    mask = consistency_mask(flow_fw, flow_bw)
    if not mask.any():
        return float("nan"), 0.0
    return float(((warped - b) ** 2).sum(-1)[mask].mean() * WARP_SCALE), float(mask.mean())


@dataclass
class WarpResult:
    warp_error: float  # mean over frame pairs (NaN pairs, all pixels occluded, are skipped)
    pairs: int
    flow: str  # which flow estimator, and from which video
    per_pair: list[float] = field(default_factory=list)
    kept_fraction: float = float("nan")  # mean share of non-occluded pixels

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "per_pair"}


def warp_error(frames: np.ndarray, flow, source: np.ndarray | None = None, progress: bool = False) -> WarpResult:
    """E_warp of `frames` (N, H, W, 3) uint8, flow from `source` (same shape) when given."""
    from tqdm import tqdm

    frames = np.asarray(frames)
    ref = frames if source is None else np.asarray(source)
    if ref.shape != frames.shape:
        raise InputError(None, f"source frames {ref.shape} and video frames {frames.shape} differ in shape")
    if len(frames) < 2:
        raise InputError(None, f"need at least 2 frames for a warp error, got {len(frames)}")
    errs, kept = [], []
    for t in tqdm(range(len(frames) - 1), desc=f"warp error [{flow.name}]", disable=not progress, leave=False):
        fw = flow(ref[t:t + 1], ref[t + 1:t + 2])[0]
        bw = flow(ref[t + 1:t + 2], ref[t:t + 1])[0]
        e, k = pair_warp_error(frames[t], frames[t + 1], fw, bw)
        errs.append(e)
        kept.append(k)
    valid = [e for e in errs if not np.isnan(e)]
    return WarpResult(float(np.mean(valid)) if valid else float("nan"), len(errs),
                      f"{flow.description}, from the {'source' if source is not None else 'video itself'}",
                      errs, float(np.mean(kept)))
