"""True-size rehearsal without a GPU: FLOPs and peak live tensor bytes of the real editor code path.

The models are built on the meta device (shapes, no data), so SD 2.1-base at 512x512 costs nothing to
hold; the real `IPFaceDiffPipeline.__call__` loop runs on them (keyframe sampling, blend plans,
processors, hooks, injection, propagation, scheduler), the real `invert_latents`/`encode_images` run
for the inversion and the real `pipe.decode` for decoding. Two instruments watch every aten op:

- `torch.utils.flop_counter.FlopCounterMode` counts FLOPs (2 x multiply-adds of matmuls, convolutions
  and attention), per phase;
- `LiveBytes`, a TorchDispatchMode, sees every tensor storage the first time an op produces or
  reads it and a weakref callback sees it freed: the sum of live storage bytes is what an ideal caching
  allocator (no fragmentation, blocks rounded to 512 bytes as CUDA's allocator does) would hold.

Speed: a meta UNet forward still costs about a second of Python dispatch at true size, and a 1200-frame
edit makes ~13,000 of them. A UNet pass pair's cost depends only on its call shape, so each distinct
shape is measured once (`CallMemo`, keyed by everything the cost depends on: pass mode, batch size,
frames with two keyframes, injection flags, CFG groups, method) and later calls with the same key are
replayed: their FLOPs added, their peak excess over the bytes live at the call applied, and the
tensors they leave behind (noise prediction; keyframe features/outputs in the step state) allocated
with the recorded shapes. The loop around them is the real one, so which calls happen and which
tensors stay alive is the real code path's. `tests/test_true_size_rehearsal.py` checks the replay against a real
CPU run of the tiny models: FLOPs equal, peak bytes within a stated tolerance.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .pipeline import EditOutput, IPFaceDiffPipeline

BLOCK = 512  # CUDA's caching allocator rounds every allocation up to 512 bytes
PHASE_OF_MODE = {"keyframes": "keyframe_pass", "propagate": "propagation_pass", "frame": "frame_pass", "anchors": "anchor_pass"}


def block_bytes(nbytes: int) -> int:
    return -(-nbytes // BLOCK) * BLOCK


# --------------------------------------------------------------------------- live bytes


class LiveBytes(TorchDispatchMode):
    """Peak live tensor-storage bytes on one device type, per phase, as an ideal allocator sees them.

    A storage counts from the first op that produces or reads it (tensors made outside any op, e.g.
    `torch.from_numpy`, count from first use) until Python frees it. `ignore` storages (the weights)
    never count. On the meta device a copy to the host (`.cpu()`) returns zeros of the right shape on
    the host, so code that ends in numpy (decoding to uint8 frames) runs unchanged; host memory is
    not device memory and is not counted.
    """

    def __init__(self, device_type: str, ignore: Sequence[torch.Tensor] = ()):
        super().__init__()
        self.device_type = device_type
        self.live = 0
        self.peak = 0
        self.phase = "other"
        self.peaks: dict[str, int] = defaultdict(int)
        self.window_peak = 0  # peak since `region` entry (see Meter)
        self._refs: dict[int, weakref.ref] = {}
        self._ignored = {id(t.untyped_storage()): t.untyped_storage() for t in ignore}

    def _free(self, key: int, nbytes: int, _ref) -> None:
        if self._refs.pop(key, None) is not None:
            self.live -= nbytes

    def note(self, nbytes: int) -> None:
        """`nbytes` more are live now (real allocation or a replayed call's transient)."""
        level = self.live + nbytes
        self.peak = max(self.peak, level)
        self.peaks[self.phase] = max(self.peaks[self.phase], level)
        self.window_peak = max(self.window_peak, level)

    def _track(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type != self.device_type:
            return
        st = t.untyped_storage()
        key = id(st)
        if key in self._refs or key in self._ignored:
            return
        nbytes = block_bytes(st.nbytes()) if st.nbytes() else 0
        if not nbytes:
            return
        self._refs[key] = weakref.ref(st, lambda ref, key=key, n=nbytes: self._free(key, n, ref))
        self.note(nbytes)
        self.live += nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and self._meta_to_host(args[0], kwargs):
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype, device="cpu")
        for t in tree_flatten((args, kwargs))[0]:
            self._track(t)
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            self._track(t)
        return out

    @staticmethod
    def _meta_to_host(t, kwargs) -> bool:
        device = kwargs.get("device")
        return isinstance(t, torch.Tensor) and t.device.type == "meta" and device is not None and torch.device(device).type == "cpu"


# --------------------------------------------------------------------------- fused attention


def _cpu_flash_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


# torch's FlopCounterMode has formulas for the CUDA fused attention kernels but not for the CPU one,
# which it would count as zero: the same formula (2 matmuls, 4 b h Lq Lk d) is added for it
FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops}


class FusedAttentionOnMeta(TorchFunctionMode):
    """On the meta device `scaled_dot_product_attention` has no fused kernel and would decompose into
    the math path (score matrices materialised); a GPU runs a fused kernel (flash / memory-efficient)
    that keeps only the output and one log-sum-exp per query. This routes meta calls to the fused
    CPU kernel's meta implementation: the op, FLOPs and live tensors of a fused kernel, as the real
    CPU run (float32) and a GPU run have."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention and args[0].device.type == "meta":
            q, k, v = args[:3]
            plain = len(args) == 3 and kwargs.get("attn_mask") is None and not kwargs.get("dropout_p") and not kwargs.get("is_causal")
            if plain:  # every UNet and VAE attention; the text encoder's masked one keeps the math path
                return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=kwargs.get("scale"))[0]
        return func(*args, **kwargs)


# --------------------------------------------------------------------------- phases


@dataclass
class RegionResult:
    flops: int = 0
    excess: int = 0  # peak bytes above those live at entry
    retained: int = 0  # bytes live at exit minus at entry


@dataclass
class Meter:
    """FLOPs, calls and peak bytes per phase. Regions nest; each FLOP is booked to the innermost."""

    tracker: LiveBytes
    flops: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    replayed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _children: list[int] = field(default_factory=list)

    @contextlib.contextmanager
    def region(self, phase: str):
        tr = self.tracker
        prev_phase, prev_window = tr.phase, tr.window_peak
        tr.phase, before = phase, tr.live
        tr.window_peak = before
        res = RegionResult()
        self._children.append(0)
        try:
            with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as fc:
                yield res
        finally:
            total = fc.get_total_flops()
            children = self._children.pop()
            self.flops[phase] += total - children
            if self._children:
                self._children[-1] += total
            res.flops, res.excess, res.retained = total, tr.window_peak - before, tr.live - before
            tr.window_peak = max(prev_window, tr.window_peak)
            tr.phase = prev_phase

    def replay(self, phase: str, flops: int, excess: int) -> None:
        """A call measured before runs again: its FLOPs and its transient peak, nothing executed."""
        prev = self.tracker.phase
        self.tracker.phase = phase
        self.tracker.note(excess)
        self.tracker.phase = prev
        self.flops[phase] += flops  # no FlopCounterMode saw it: nothing to take off an enclosing region
        self.replayed[phase] += 1


@dataclass
class CallCost:
    flops: int
    excess: int
    out: list[tuple[tuple[int, ...], torch.dtype]]  # each prompt's noise prediction: shape, dtype
    stored: dict[tuple, tuple[tuple[int, ...], torch.dtype]]  # stored_state key -> shape, dtype, (re)written by the call
    dropped: tuple[tuple, ...] = ()  # stored_state keys the call removed


# --------------------------------------------------------------------------- the metered pipeline

def stored_state(state) -> dict[tuple, torch.Tensor]:
    """What a pass pair leaves in the step state: keyframe features, each prompt's outputs and (bounded
    mode) each prompt's anchor keys/values."""
    out = {("kf_features", k): v for k, v in state.kf_features.items()}
    for p, d in enumerate(state.kf_outs):
        out.update({("kf_outs", p, k): v for k, v in d.items()})
    for p, d in enumerate(state.anchor_kvs):
        out.update({("anchor_kvs", p, k): v for k, v in d.items()})
    return out


def _storage_bytes(tensors) -> int:
    return sum(block_bytes(s.nbytes()) for s in {id(t.untyped_storage()): t.untyped_storage() for t in tensors}.values())


class MeteredPipeline(IPFaceDiffPipeline):
    """`IPFaceDiffPipeline` whose pass pairs (one source pass + one edit pass per prompt) are booked
    per phase in a `Meter`.

    memo=None: every pair runs (a real run, measured). memo={}: each distinct pair signature runs
    once and is replayed after (the rehearsal). Nothing else of the pipeline changes.
    """

    def __init__(self, *args, meter: Meter, memo: dict | None = None, **kw):
        super().__init__(*args, **kw)
        self.meter, self.memo = meter, memo

    @staticmethod
    def signature(state, method, mode: str, xs: list[torch.Tensor]) -> tuple:
        two = int((state.plan.w_next > 0).sum()) if mode == "propagate" else None
        # bounded mode: a keyframe pass appends to a carried keyframe and attends to the anchors' keys too
        anchors = next(iter(state.anchor_kvs[0].values())).shape[1] if state.anchor_kvs and state.anchor_kvs[0] else 0
        return (mode, method.name, len(xs), tuple(xs[0].shape), xs[0].dtype, two, state.inject_qk, state.inject_f, state.groups,
                state.carried, anchors)

    def _pair(self, state, method, mode, xs, src, t, emb, guidance_scale):
        phase = PHASE_OF_MODE[mode]
        self.meter.calls[phase] += 1
        key = None if self.memo is None else self.signature(state, method, mode, xs)
        if key is not None and key in self.memo:
            return self._replay(state, mode, phase, self.memo[key], src.device)
        # weak references: holding the entries would keep the ones the call replaces alive
        before = {k: (weakref.ref(v), block_bytes(v.untyped_storage().nbytes()), id(v.untyped_storage()))
                  for k, v in stored_state(state).items()}
        with self.meter.region(phase) as res:
            eps = super()._pair(state, method, mode, xs, src, t, emb, guidance_scale)
        if key is not None:
            after = stored_state(state)
            # (re)written entries: new keys, or a new tensor under a held key (bounded mode appends to the carried keyframe)
            stored = {k: v for k, v in after.items() if k not in before or before[k][0]() is not v}
            dropped = tuple(k for k in before if k not in after)
            replaced = {sid: n for k, (ref, n, sid) in before.items() if k not in after or ref() is not after[k]}
            expect = _storage_bytes([*eps, *stored.values()]) - sum(replaced.values())
            if res.retained != expect:  # the replay would leave other tensors alive than the real call
                raise RuntimeError(f"{key}: pass pair retained {res.retained} bytes, expected {expect} (outputs + stored state)")
            self.memo[key] = CallCost(res.flops, res.excess, [(tuple(e.shape), e.dtype) for e in eps],
                                      {k: (tuple(v.shape), v.dtype) for k, v in stored.items()}, dropped)
        del before
        return eps

    def _decode_batch(self, latents: torch.Tensor):
        """Decoding one batch costs the same for every batch of the same shape: measured once."""
        import numpy as np

        self.meter.calls["decode"] += 1
        key = None if self.memo is None else ("decode", tuple(latents.shape), latents.dtype)
        if key is not None and key in self.memo:
            cost = self.memo[key]
            self.meter.replay("decode", cost.flops, cost.excess)
            shape, dtype = cost.out[0]
            return np.zeros(shape, dtype)  # host frames: not device memory
        with self.meter.region("decode") as res:
            frames = super()._decode_batch(latents)
        if key is not None:
            if res.retained != 0:
                raise RuntimeError(f"{key}: decoding left {res.retained} device bytes alive")
            self.memo[key] = CallCost(res.flops, res.excess, [(frames.shape, frames.dtype)], {})
        return frames

    def _replay(self, state, mode: str, phase: str, cost: CallCost, device) -> list[torch.Tensor]:
        self.meter.replay(phase, cost.flops, cost.excess)
        targets = lambda key: state.kf_features if key[0] == "kf_features" else getattr(state, key[0])[key[1]]  # noqa: E731
        for key in cost.dropped:
            del targets(key)[key[-1]]
        for key, (shape, dtype) in cost.stored.items():
            targets(key)[key[-1]] = torch.empty(shape, dtype=dtype, device=device)
        state.mode = mode
        state.kf_out, state.anchor_kv = state.kf_outs[len(cost.out) - 1], state.anchor_kvs[len(cost.out) - 1]
        state.end_pass_pair()
        state.role = "off"
        return [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in cost.out]


# --------------------------------------------------------------------------- inversion stand-in


class ShapeOnlyInversion:
    """An `InvertedVideo` holding no data: `latents` returns uninitialised tensors of the cache's
    shapes (float32, as the safetensors cache returns them) on `device` (meta: shapes only)."""

    def __init__(self, n_frames: int, timesteps: Sequence[int], latent_shape: Sequence[int], device, prompt: str = ""):
        self._n, self._timesteps = int(n_frames), [int(t) for t in timesteps]
        self.latent_shape, self.device, self._prompt = tuple(latent_shape), torch.device(device), prompt

    @property
    def n_frames(self) -> int:
        return self._n

    @property
    def timesteps(self) -> list[int]:
        return list(self._timesteps)

    @property
    def prompt(self) -> str:
        return self._prompt

    def latents(self, step_index: int, frames=None) -> torch.Tensor:
        if not 0 <= step_index <= len(self._timesteps):
            raise IndexError(f"step_index {step_index} outside 0..{len(self._timesteps)}")
        n = self._n if frames is None else len(range(self._n)[frames]) if isinstance(frames, slice) else len(frames)
        return torch.empty((n, *self.latent_shape), dtype=torch.float32, device=self.device)


# --------------------------------------------------------------------------- models on the meta device


def meta_components(arch: str = "true_size", dtype: torch.dtype = torch.bfloat16, size: int = 512, work_dir: str | Path | None = None):
    """SD 2.1-base (`true_size`) or the sample profile's `tiny` architecture on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from . import models as M

    configs = {
        "true_size": (M.sd21_unet_config(size // 8), M.sd21_vae_config(size), M.sd21_text_config()),
        "tiny": (M.tiny_unet_config(size // 8), M.tiny_vae_config(size), M.tiny_text_config()),
    }
    if arch not in configs:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(configs)}")
    unet_cfg, vae_cfg, text_cfg = configs[arch]
    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**unet_cfg), AutoencoderKL(**vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    with tempfile.TemporaryDirectory(dir=work_dir) as tok_dir:
        tokenizer = M.build_clip_tokenizer(Path(tok_dir))
    for m in (unet, vae, text_encoder):
        m.to(dtype).eval().requires_grad_(False)
    info = {"source": f"{arch}-meta", "weights": "none (meta device)", "sha256": {"combined": f"{arch}-meta"}}
    return M.Components(unet, vae, text_encoder, tokenizer, M.make_scheduler(), info)


def weight_tensors(components) -> list[torch.Tensor]:
    return [t for m in (components.unet, components.vae, components.text_encoder) for t in (*m.parameters(), *m.buffers())]


def weight_bytes(components, module: str = "unet") -> int:
    m = getattr(components, module)
    return sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))


# --------------------------------------------------------------------------- the phases


def batch_sizes(n_frames: int, batch_size: int) -> list[int]:
    return [min(batch_size, n_frames - s) for s in range(0, n_frames, batch_size)]


@torch.no_grad()
def rehearse_inversion(meter: Meter, components, n_frames: int, steps: int, batch_size: int, size: int, prompt: str = "",
                       memo: dict | None = None) -> None:
    """What `inversion.invert_video` runs on the device: the prompt once, then per frame batch the
    VAE encoding and `invert_latents` (all steps' states of the batch alive until written out).
    Host work (frame hashing, the file writer) is not device work and is left out."""
    from .inversion import ddim_schedule, invert_latents
    from .models import encode_images, encode_prompt, uint8_to_tensor

    device = components.device
    with meter.region("invert"):
        cond = encode_prompt(components, [prompt])
        timesteps, alphas = ddim_schedule(components.new_scheduler(), steps)
        for b in batch_sizes(n_frames, batch_size):
            meter.calls["invert"] += 1
            key = ("invert", b)
            if memo is not None and key in memo:
                meter.replay("invert", memo[key].flops, memo[key].excess)
                continue
            with meter.region("invert") as res:
                frames = torch.zeros((b, size, size, 3), dtype=torch.uint8)  # decoded frames arrive on the host
                x0 = encode_images(components, uint8_to_tensor(frames).to(device), batch_size)
                states = invert_latents(components.unet, x0, cond, timesteps, alphas)
                del frames, x0, states
            if memo is not None:
                memo[key] = CallCost(res.flops, res.excess, [], {})


def edit_and_decode(pipe: IPFaceDiffPipeline, meter: Meter, inversion, steps: int, method: str, seed: int, prompt) -> dict:
    """The edit (latents kept on the device side, as the edit stage does) and the streamed decode."""
    with meter.region("edit_other"):
        out = pipe(prompt, inversion, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), method=method,
                   output_type="latent")
    outs = [out] if isinstance(out, EditOutput) else out
    with meter.region("decode"):
        for o in outs:
            assert sum(1 for _ in pipe.decode(o.latents)) == inversion.n_frames
    return outs[0].info


def summarise(meter: Meter, extra: dict | None = None) -> dict:
    tr = meter.tracker
    edit_phases = ("keyframe_pass", "propagation_pass", "frame_pass", "anchor_pass", "edit_other")
    flops = {k: int(v) for k, v in meter.flops.items()}
    flops["edit"] = sum(flops.get(p, 0) for p in edit_phases)
    flops["total"] = sum(v for k, v in flops.items() if k != "edit")
    peaks = {k: int(v) for k, v in tr.peaks.items()}
    peaks["edit"] = max(peaks.get(p, 0) for p in edit_phases)
    peaks["max"] = int(tr.peak)
    return {"flops": flops, "peak_bytes": peaks, "pair_calls": dict(meter.calls), "replayed": dict(meter.replayed), **(extra or {})}


def rehearse(components, n_frames: int, edit_config, steps: int, invert_steps: int, invert_batch_size: int = 8, method: str = "ours",
             seed: int = 0, prompt: str | list[str] = "a person wearing glasses", size: int = 512, memo: dict | None = None) -> dict:
    """One row: the whole video's inversion, edit and decode on `components` (meta), replaying
    repeated call shapes from `memo` (shared across rows of the same architecture and dtype)."""
    from .inversion import ddim_schedule

    tracker = LiveBytes(components.device.type, weight_tensors(components))
    meter = Meter(tracker)
    memo = {} if memo is None else memo
    with tracker, FusedAttentionOnMeta():
        rehearse_inversion(meter, components, n_frames, invert_steps, invert_batch_size, size, memo=memo)
        timesteps, _ = ddim_schedule(components.new_scheduler(), invert_steps)
        s = components.vae_scale
        inversion = ShapeOnlyInversion(n_frames, timesteps, (4, size // s, size // s), components.device)
        # built after the inversion, as in the DAG: its memory options (VAE slicing) are the edit's
        pipe = MeteredPipeline(components, None, edit_config, progress=False, meter=meter, memo=memo)
        info = edit_and_decode(pipe, meter, inversion, steps, method, seed, prompt)
    return summarise(meter, {"frames": n_frames, "keyframes_per_step": len(info["keyframes"][0]) if info["keyframes"] else 0,
                             "keyframe_attention": info["keyframe_attention"]})


def measure_real(components, branches, frames, edit_config, steps: int, invert_steps: int, invert_batch_size: int = 8, method: str = "ours",
                 seed: int = 0, prompt: str = "a person wearing glasses", work_dir: str | Path | None = None) -> dict:
    """The same instruments on a real run (real weights and data, every call executed): the
    product's `invert_video` writes and reads the safetensors cache, then edit and decode."""
    from .inversion import InversionCache, invert_video

    tracker = LiveBytes(components.device.type, weight_tensors(components))
    meter = Meter(tracker)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp, tracker:
        with meter.region("invert"):
            meter.calls["invert"] += math.ceil(len(frames) / invert_batch_size)
            invert_video(components, branches, frames, Path(tmp) / "v.safetensors", "", invert_steps, invert_batch_size, progress=False)
        pipe = MeteredPipeline(components, branches, edit_config, progress=False, meter=meter, memo=None)
        info = edit_and_decode(pipe, meter, InversionCache(Path(tmp) / "v.safetensors"), steps, method, seed, prompt)
    return summarise(meter, {"frames": len(frames), "keyframes_per_step": len(info["keyframes"][0]) if info["keyframes"] else 0,
                             "keyframe_attention": info["keyframe_attention"]})
