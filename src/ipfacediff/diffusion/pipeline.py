"""IP-FaceDiff editing: TokenFlow-style joint keyframe editing with identity-guided PnP injection.

Per sampling step t (IP-FaceDiff, arXiv 2501.07530, on TokenFlow's keyframe editing, Geyer et al. 2024):
  1. keyframes: one random frame per block of `keyframe_interval` frames (re-drawn every step);
  2. keyframe pass: source pass (source branch on the inverted latents of the keyframes at t, with
     the inversion prompt) captures features; edit pass (edit branch on [uncond, cond] with
     classifier-free guidance) runs joint attention across all keyframes with q/k and resblock
     features injected, and keeps every self-attention layer's output;
  3. every other frame, in batches of `batch_size`: source pass (correspondences to the frame's past
     and future keyframes in the original video's features), edit pass whose self-attention outputs
     are the eq. 4 blend of the keyframes' outputs through those correspondences.
Everything goes through attention processors and forward hooks installed for the duration of a call
(after memory options, checked), on every distinct UNet of the branch set. Several prompts in one call
share every source pass (it depends on the inverted video only): one source + one edit pass per prompt.

Memory: the edit latents of all frames are held (4 x h/8 x w/8 per frame); UNet work is streamed in
batches; what grows with the video in exact mode is the keyframe pass: its batch, and the keyframes'
per-layer features and outputs (one keyframe per `keyframe_interval` frames, about 69 MB each at
512 px in 16-bit), which exact joint attention needs at once by definition. Its feed-forward
temporaries are chunked (`ff_chunk`). benchmarks/true_size_rehearsal.py measures all of it at true size.

Bounded keyframe attention (`keyframe_attention`: exact | bounded | auto, the rule in
keyframe_attention.py) replaces step 2-3 for long videos (Fairy-style anchors + TokenFlow groups):
  a. anchor pass: A frames evenly spaced over the clip (fixed) get a source pass and an edit pass
     with joint attention among themselves; each self-attention layer keeps the keys/values they used
     (per CFG group and prompt); their noise prediction is discarded;
  b. keyframes in contiguous groups of at most G; window by window, the group's keyframe pass (joint
     attention over the group's keyframes followed by the anchors') then propagation of the frames
     whose next keyframe is in the group (their previous one is in it or is the previous group's
     last keyframe, carried over; everything else of the previous window is dropped).
Stored state is then O(G + A) keyframes whatever the video's length. Exact mode is the same loop
with one group and no anchors.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from ..errors import InputError
from ..registry import Method, get_method
from ..settings import EditSettings
from .attention import EditState, assert_installed, install_processors
from .branches import BranchSet
from .injection import injection_steps, install_resnet_hook, pnp_attention_layers
from .keyframe_attention import KeyframeAttentionChoice, resolve_keyframe_attention
from .propagation import anchor_frames, blend_plan, keyframe_windows, sample_keyframes


EditConfig = EditSettings  # params `edit` (settings.py); the name the tests and benchmarks use


@runtime_checkable
class InvertedVideo(Protocol):
    """What the editor reads from a video's DDIM inversion: `inversion.InversionCache` (the
    safetensors file) or an in-memory stand-in (`rehearsal.ShapeOnlyInversion`)."""

    @property
    def n_frames(self) -> int: ...

    @property
    def timesteps(self) -> list[int]: ...

    @property
    def prompt(self) -> str: ...

    def latents(self, step_index: int, frames: slice | Sequence[int] | None = None) -> torch.Tensor: ...


@dataclass
class EditOutput:
    latents: torch.Tensor  # (N, 4, h, w) final edit latents (CPU)
    frames: np.ndarray | None  # (N, H, W, 3) uint8, unless output_type="latent"
    info: dict[str, Any]


def apply_memory_options(unets: Sequence[torch.nn.Module], vae, attention_slicing=None, vae_slicing=False, vae_tiling=False) -> dict:
    """diffusers' memory options. They replace attention processors: call BEFORE installing ours."""
    for unet in unets:
        if attention_slicing is not None:
            unet.set_attention_slice(attention_slicing)
    if vae_slicing:
        vae.enable_slicing()
    if vae_tiling:
        vae.enable_tiling()
    return {"attention_slicing": attention_slicing, "vae_slicing": bool(vae_slicing), "vae_tiling": bool(vae_tiling)}


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of `n` that is <= `limit` (diffusers' chunked feed-forward needs equal chunks)."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


_FF_BLOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # UNet -> its transformer blocks


@contextlib.contextmanager
def feed_forward_chunks(unet, batch: int, limit: int) -> Iterator[None]:
    """Run every transformer block's feed-forward over at most `limit` latents at a time (diffusers'
    `set_chunk_feed_forward` on the batch axis): the keyframe pass's batch grows with the video, its
    feed-forward temporaries (8x the hidden width per token) then do not. Per-token maths unchanged."""
    if limit <= 0 or batch <= limit:
        yield
        return
    blocks = _FF_BLOCKS.get(unet)
    if blocks is None:  # found once per UNet: a walk over every module costs more than a tiny UNet's forward
        blocks = _FF_BLOCKS[unet] = [m for m in unet.modules() if hasattr(m, "set_chunk_feed_forward")]
    for b in blocks:
        b.set_chunk_feed_forward(largest_divisor_at_most(batch, limit), dim=0)
    try:
        yield
    finally:
        for b in blocks:
            b.set_chunk_feed_forward(None, dim=0)


def cache_steps(cache_timesteps: Sequence[int], timesteps: Sequence[int], path=None) -> list[int]:
    """Index into the inversion cache of every sampling timestep (they must all be cached)."""
    where = {int(t): i for i, t in enumerate(cache_timesteps)}
    missing = [int(t) for t in timesteps if int(t) not in where]
    if missing:
        raise InputError(path, f"inversion cache holds timesteps {sorted(where, reverse=True)} but editing with "
                               f"{len(timesteps)} steps needs {missing}: re-run inversion with the same number of steps")
    return [where[int(t)] for t in timesteps]


class IPFaceDiffPipeline:
    """Edits a video from its DDIM inversion cache. Components come from `models.load_components`,
    branches from `branches.load_branches` (None: base weights for every branch)."""

    def __init__(self, components, branches: BranchSet | None = None, config: EditConfig | None = None, progress: bool = True):
        self.components = components
        self.branches = branches or BranchSet(base=components.unet)
        self.config = config or EditConfig()
        self.progress = progress
        self.observer = None  # EditState.observer for the next calls (tests, debugging)
        self.memory = apply_memory_options(
            self.branches.distinct_unets(), components.vae, self.config.attention_slicing, self.config.vae_slicing, self.config.vae_tiling
        )

    # ------------------------------------------------------------------ processors and hooks
    @contextlib.contextmanager
    def editing(self, state: EditState) -> Iterator[list[torch.nn.Module]]:
        """Install the edit processors and the resblock hook on every distinct UNet; restore after."""
        unets = self.branches.distinct_unets()
        restore, handles = [], []
        try:
            for unet in unets:
                restore.append((unet, install_processors(unet, state, pnp_attention_layers(unet))))
                handles.append(install_resnet_hook(unet, state))
            for unet in unets:
                assert_installed(unet, state)
            yield unets
        finally:
            for h in handles:
                h.remove()
            for unet, before in restore:
                unet.set_attn_processor(dict(before))
            state.end_step()

    # ------------------------------------------------------------------ prompts
    def _embed(self, text: str, allow_empty: bool) -> torch.Tensor:
        from .models import encode_prompt

        emb = encode_prompt(self.components, text, allow_empty=allow_empty)
        return emb.to(self.components.unet.device, self.components.unet.dtype)

    def prompt_embeddings(self, prompt: str, negative_prompt: str | None, source_prompt: str):
        """(cond, uncond, source) embeddings (1, 77, D). Empty edit prompt is rejected; over-long
        prompts warn naming the dropped words (PromptTruncationWarning) and are recorded."""
        cond, dropped = self.edit_embedding(prompt)
        return cond, self._embed(negative_prompt or "", True), self._embed(source_prompt or "", True), dropped

    def edit_embedding(self, prompt: str) -> tuple[torch.Tensor, str]:
        """(cond embedding, the words the 77-token context drops) of one edit prompt."""
        from .models import truncated_text

        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(None, "empty prompt: say what the edit should be, e.g. -p 'a person wearing glasses'")
        dropped = truncated_text(self.components.tokenizer, prompt)
        return self._embed(prompt, allow_empty=False), dropped  # warns naming `dropped`

    # ------------------------------------------------------------------ one source pass + one edit pass per prompt
    def _pair(self, state: EditState, method: Method, mode: str, xs: list[torch.Tensor], src, t, emb,
              guidance_scale: float) -> list[torch.Tensor]:
        """Noise predictions (B, 4, h, w) of the edit pass for each prompt's latents xs[p], after ONE
        source pass on src: the source branch's features, correspondences and injected q/k are the
        same for every prompt (they depend on the inverted video only), so P prompts cost 1 + P passes
        (1 + 2P UNet batches with guidance), not 2P. Prompt p reads and writes `state.kf_outs[p]`."""
        conds, uncond, source = emb
        B = len(src)
        ff = self.config.ff_chunk if mode in ("keyframes", "anchors") else 0
        if method.inject or method.propagate:
            state.set("source", mode)
            with self.branches.use(method.source_branch) as unet, feed_forward_chunks(unet, B, ff):
                unet(src, t, encoder_hidden_states=source.expand(B, -1, -1))
        out = []
        for p, (x, cond) in enumerate(zip(xs, conds)):
            state.kf_out, state.anchor_kv = state.kf_outs[p], state.anchor_kvs[p]
            state.set("edit", mode)
            if state.groups == 2:
                lat, text = torch.cat([x, x]), torch.cat([uncond.expand(B, -1, -1), cond.expand(B, -1, -1)])
            else:
                lat, text = x, cond.expand(B, -1, -1)
            with self.branches.use(method.edit_branch) as unet, feed_forward_chunks(unet, len(lat), ff):
                eps = unet(lat, t, encoder_hidden_states=text).sample
            if state.groups == 2:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            out.append(eps)
        state.end_pass_pair()
        state.role = "off"
        return out

    # ------------------------------------------------------------------ exact or bounded
    def keyframe_attention(self, method: Method, n_frames: int, latent_hw: tuple[int, int], prompts: int,
                           groups: int) -> KeyframeAttentionChoice:
        """The config's keyframe attention request resolved for this video (keyframe_attention.py's
        rule on eq. 1-2 estimates of the stored keyframe state); InputError naming the parameter
        when it cannot work."""
        cfg = self.config
        unet = self.components.unet
        G, A = cfg.keyframe_group_size, cfg.keyframe_anchors
        if not method.propagate:
            return KeyframeAttentionChoice(cfg.keyframe_attention, "none", f"method {method.name} has no keyframes", G, A,
                                           cfg.keyframe_memory_gib, None, None, 0)
        choice = resolve_keyframe_attention(unet.config, latent_hw, n_frames, cfg.keyframe_interval, cfg.keyframe_attention, G, A,
                                            cfg.keyframe_memory_gib, groups, prompts, unet.dtype.itemsize)
        if choice.bounded and A > n_frames:
            raise InputError(None, f"edit.keyframe_anchors: {A} anchors but the video has only {n_frames} frames")
        return choice

    # ------------------------------------------------------------------ the call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        inversion: InvertedVideo,
        negative_prompt: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        frames: Sequence[int] | None = None,
        method: str = "ours",
        source_prompt: str | None = None,
        output_type: str = "np",
        callback_on_step_end: Callable[..., None] | None = None,
        resume: dict | None = None,
    ) -> EditOutput | list[EditOutput]:
        """Edit `frames` (default: all; a subset is edited as a clip of its own) of the video whose
        inversion cache is `inversion`.

        A list of prompts edits them all in one run sharing the source pass (one EditOutput each, in
        order; each identical to a run with that prompt alone and the same generator seed: same
        keyframes, same calls per prompt).

        `callback_on_step_end(pipe, step, timestep, state)` runs after every denoising step with
        state = {"step": steps done, "latents", "generator_state", "keyframes"} ("latents" stacked
        over prompts when `prompt` is a list); passing such a state back as `resume` continues from it
        and gives the same result as an uninterrupted call.

        `source_prompt` is the prompt the source pass conditions on (default: the one the cache was
        inverted with). `generator` drives keyframe sampling (DDIM with eta 0 draws nothing else).
        `output_type="latent"` skips decoding (then stream `self.decode(out.latents)` into a writer).
        """
        cfg = self.config
        m = get_method(method)
        steps = num_inference_steps or cfg.steps
        g = cfg.guidance_scale if guidance_scale is None else guidance_scale
        negative_prompt = cfg.negative_prompt if negative_prompt is None else negative_prompt
        source_prompt = getattr(inversion, "prompt", "") if source_prompt is None else source_prompt
        unet = self.components.unet
        device, dtype = unet.device, unet.dtype

        frame_idx = torch.arange(inversion.n_frames) if frames is None else torch.as_tensor(list(frames), dtype=torch.long)
        if len(frame_idx) == 0 or bool((frame_idx[1:] <= frame_idx[:-1]).any()):
            raise InputError(getattr(inversion, "path", None), "frames to edit must be a non-empty increasing list")
        N = len(frame_idx)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise InputError(None, "no prompt: give at least one edit prompt")
        embs = [self.edit_embedding(p) for p in prompts]  # (cond, dropped words) per prompt
        conds = [e[0] for e in embs]
        uncond, source = self._embed(negative_prompt or "", True), self._embed(source_prompt or "", True)

        scheduler = self.components.new_scheduler()
        scheduler.set_timesteps(steps)  # host-side integer timesteps (the step reads them as ints)
        timesteps = [int(t) for t in scheduler.timesteps]
        cache_idx = cache_steps(inversion.timesteps, timesteps, getattr(inversion, "path", None))
        n_qk = injection_steps(steps, cfg.pnp_attn_t) if m.inject else 0
        n_f = injection_steps(steps, cfg.pnp_f_t) if m.inject else 0

        def source_latents(step: int, sel: torch.Tensor) -> torch.Tensor:
            return inversion.latents(cache_idx[step], frames=frame_idx[sel]).to(device, dtype)

        state = EditState(groups=2 if g > 1.0 else 1, chunk=cfg.attn_chunk, observer=self.observer)
        x0 = source_latents(0, torch.arange(N))  # every edit starts from the inverted x_T
        kfa = self.keyframe_attention(m, N, tuple(x0.shape[-2:]), len(prompts), state.groups)
        anchors = anchor_frames(N, kfa.anchors) if kfa.bounded else None
        group_size = kfa.group_size if kfa.bounded else N  # exact: one group holds every keyframe
        xs = [x0] + [x0.clone() for _ in prompts[1:]]
        history: list[list[int]] = []
        step_s: list[float] = []
        first_step = 0
        if resume is not None:  # state saved by callback_on_step_end: steps before it are done
            first_step, history = int(resume["step"]), list(resume["keyframes"])
            saved = resume["latents"].to(device, dtype)
            xs = [saved] if isinstance(prompt, str) else list(saved.unbind(0))
            if len(xs) != len(prompts):
                raise InputError(None, f"resume state holds {len(xs)} prompts' latents, this call edits {len(prompts)}")
            if generator is not None and resume.get("generator_state") is not None:
                generator.set_state(resume["generator_state"])
        t_start = time.perf_counter()
        with self.editing(state) as unets:
            for i, t in enumerate(self._progress(timesteps, f"edit [{m.name}]")):
                if i < first_step:
                    continue
                t0 = time.perf_counter()
                state.step, state.inject_qk, state.inject_f = i, i < n_qk, i < n_f
                xs_next = [torch.empty_like(x) for x in xs]
                state.kf_outs = [{} for _ in prompts]
                state.anchor_kvs = [{} for _ in prompts]

                def denoise(sel: torch.Tensor, mode: str) -> None:
                    rows = sel.to(device)
                    cur = [x[rows] for x in xs]
                    eps = self._pair(state, m, mode, cur, source_latents(i, sel), t, (conds, uncond, source), g)
                    if mode == "anchors":  # only their keys/values are kept; the frames are denoised later
                        return
                    for x_next, e, c in zip(xs_next, eps, cur):
                        x_next[rows] = scheduler.step(e, t, c).prev_sample

                if m.propagate:
                    kf = sample_keyframes(N, cfg.keyframe_interval, generator)
                    history.append(frame_idx[kf].tolist())
                    if anchors is not None:
                        state.keyframes = anchors.to(device)
                        denoise(anchors, "anchors")
                    rest = torch.from_numpy(np.setdiff1d(np.arange(N), kf.numpy()))
                    windows = keyframe_windows(blend_plan(rest, kf), len(kf), group_size)
                    for win in windows:
                        state.keyframes = kf[win.held_start : win.end].to(device)
                        denoise(kf[win.start : win.end], "keyframes")
                        for b in range(0, len(win.rows), cfg.batch_size):
                            state.plan = win.plan[b : b + cfg.batch_size]
                            denoise(rest[win.rows[b : b + cfg.batch_size]], "propagate")
                        if win is not windows[-1]:
                            state.keep_last_keyframe()  # the next window's carried keyframe; the rest is dropped
                else:
                    for sel in torch.arange(N).split(cfg.batch_size):
                        denoise(sel, "frame")
                state.end_step()
                for u in unets:  # nothing may have swapped our processors mid-edit
                    assert_installed(u, state)
                xs = xs_next
                step_s.append(time.perf_counter() - t0)
                if callback_on_step_end is not None:
                    latents_now = xs[0] if isinstance(prompt, str) else torch.stack(xs)
                    callback_on_step_end(self, i, t, {"step": i + 1, "latents": latents_now, "keyframes": [list(k) for k in history],
                                                      "generator_state": None if generator is None else generator.get_state()})
        edit_s = time.perf_counter() - t_start

        outputs = []
        for p, x, emb in zip(prompts, xs, embs):
            latents = x.cpu()
            t0 = time.perf_counter()
            out_frames = None if output_type == "latent" else np.stack(list(self.decode(latents)))
            info = {
                "method": asdict(m), "prompt": p, "prompt_truncated": emb[1], "negative_prompt": negative_prompt,
                "source_prompt": source_prompt, "prompts_sharing_source_pass": len(prompts), "steps": steps, "guidance_scale": g,
                "timesteps": timesteps, "keyframe_interval": cfg.keyframe_interval, "batch_size": cfg.batch_size, "ff_chunk": cfg.ff_chunk,
                "pnp_attn_t": cfg.pnp_attn_t, "pnp_f_t": cfg.pnp_f_t, "injected_steps": {"qk": n_qk, "resblock": n_f}, "n_frames": N,
                "frames": frame_idx.tolist(), "keyframes": history, "memory_options": self.memory,
                "keyframe_attention": {**asdict(kfa), "anchor_frames": [] if anchors is None else frame_idx[anchors].tolist()},
                "branches": {"source": self._source_of(m.source_branch), "edit": self._source_of(m.edit_branch)},
                "device": str(device), "dtype": str(dtype).replace("torch.", ""),
                "timings_s": {"edit": round(edit_s, 4), "per_step": [round(s, 4) for s in step_s],
                              "decode": round(time.perf_counter() - t0, 4)},
            }
            outputs.append(EditOutput(latents, out_frames, info))
        return outputs[0] if isinstance(prompt, str) else outputs

    def decode(self, latents: torch.Tensor) -> Iterator[np.ndarray]:
        """uint8 frames (H, W, 3) one by one, VAE-decoded `batch_size` at a time: stream them into a
        writer and memory stays bounded whatever the video length."""
        bs = self.config.batch_size
        for b in self._progress(range(0, len(latents), bs), "decode", unit="batch"):
            yield from self._decode_batch(latents[b : b + bs])

    def _decode_batch(self, latents: torch.Tensor) -> np.ndarray:
        """(B, H, W, 3) uint8 frames of one batch of latents."""
        from .models import decode_latents, tensor_to_uint8

        return tensor_to_uint8(decode_latents(self.components, latents, batch_size=len(latents)).cpu())

    def _source_of(self, branch: str) -> str:
        return "base" if branch == "base" else self.branches.sources.get(branch, "base")

    def _progress(self, it, desc: str, unit: str = "step"):
        from tqdm import tqdm

        return tqdm(it, desc=desc, unit=unit, disable=not self.progress, leave=False)
