"""A plain float64 reference of IP-FaceDiff's editing step, for the engine tests.

Written from the method's description (README "Method, as implemented"; REFERENCE sections 1-2),
not from src/ipfacediff/diffusion: its own attention processors (explicit softmax, one frame and head
at a time), its own keyframe blocks, eq. 4 weights, cosine nearest neighbours, PnP injection (on the
resblock's OUTPUT, recomputing its skip path) and DDIM update; every frame of a pass in one batch, no
chunking. It runs the diffusers UNet modules themselves (convolutions, norms, projections): what it
checks is what the engine adds on top of them. It imports nothing from ipfacediff.diffusion.

Per sampling step i (timestep t_i, inverted latents z_i of the ORIGINAL video, edit latents x_i):
  keyframes: one frame uniformly at random from each block of `interval` consecutive frames, drawn
    afresh at every step from the edit's generator (one `torch.rand(n_blocks)` per step);
  source pass (source branch, per-frame attention, the inversion prompt) on z_i: records every
    self-attention layer's input features, the q/k of the PnP layers and the residual (resblock output
    minus its skip path) of up_blocks[1].resnets[1];
  edit pass (edit branch, batch [x, x] with [negative, prompt] embeddings):
    - keyframes: every keyframe's queries attend to the keys/values of ALL keyframes of its CFG half;
    - other frames: each self-attention output is the eq. 4 blend of the outputs of the nearest past
      and nearest future keyframe, w_prev = d_next / (d_prev + d_next), w_next = d_prev / (...),
      gathered at the tokens whose SOURCE-pass features are most cosine-similar (one keyframe alone,
      weight 1, before the first / after the last keyframe);
    - PnP: during the first int(steps * pnp_attn_t) steps the q and k (not v) of decoder attention
      blocks up_blocks[1].attentions[1,2], up_blocks[2..3].attentions[*] are the source pass's; during
      the first int(steps * pnp_f_t) steps the residual of up_blocks[1].resnets[1] is the source's
      (the edit keeps its own skip path);
  guidance eps = eps_neg + g (eps_prompt - eps_neg); DDIM (eta 0) to the next timestep.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

PNP_RESBLOCK = "up_blocks.1.resnets.1"

# method -> (source branch, edit branch, PnP injection, keyframes + propagation): the README's table
METHODS = {
    "ours": ("identity", "directional", True, True),
    "no_id_guidance": ("identity", "directional", False, True),
    "no_directional": ("identity", "base", True, True),
    "tokenflow": ("base", "base", True, True),
    "per_frame": ("identity", "directional", True, False),
}


def is_pnp_attention(layer: str) -> bool:
    """Self-attention layers of decoder attention blocks 4-11 (up_blocks[1].attentions[1,2],
    up_blocks[2].attentions[*], up_blocks[3].attentions[*])."""
    p = layer.split(".")
    if len(p) < 4 or p[0] != "up_blocks" or p[2] != "attentions" or not layer.endswith(".attn1"):
        return False
    up, block = int(p[1]), int(p[3])
    return (up == 1 and block in (1, 2)) or up in (2, 3)


def is_decoder_self_attention(layer: str) -> bool:
    return layer.startswith("up_blocks.") and layer.endswith(".attn1")


# --------------------------------------------------------------------------- pure maths


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """q (S, C), k and v (T, C): multi-head softmax(q k^T / sqrt(d)) v, one head at a time."""
    d = q.shape[1] // heads
    out = torch.empty_like(q)
    for h in range(heads):
        c = slice(h * d, (h + 1) * d)
        scores = q[:, c] @ k[:, c].T / math.sqrt(d)
        w = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
        out[:, c] = (w / w.sum(dim=1, keepdim=True)) @ v[:, c]
    return out


def draw_keyframes(n_frames: int, interval: int, generator: torch.Generator) -> list[int]:
    blocks = [(s, min(interval, n_frames - s)) for s in range(0, n_frames, interval)]
    u = torch.rand(len(blocks), generator=generator)
    return [s + min(int(u[b] * size), size - 1) for b, (s, size) in enumerate(blocks)]


def eq4_neighbours(frame: int, keyframes: list[int]) -> list[tuple[int, float]]:
    """[(keyframe, weight)]: the nearest past and future keyframes weighted by temporal distance."""
    past = [k for k in keyframes if k <= frame]
    future = [k for k in keyframes if k >= frame]
    if not past or not future or past[-1] == future[0]:
        return [((past or future)[-1 if past else 0], 1.0)]
    p, n = past[-1], future[0]
    return [(p, (n - frame) / (n - p)), (n, (frame - p) / (n - p))]


def cosine_nearest(feat: torch.Tensor, kf_feat: torch.Tensor) -> tuple[torch.Tensor, float]:
    """For each token of feat (S, C) the index of the most cosine-similar token of kf_feat (S', C),
    and the smallest gap between the best and second-best similarity (how far from a tie)."""
    a = feat / feat.norm(dim=1, keepdim=True)
    b = kf_feat / kf_feat.norm(dim=1, keepdim=True)
    sim = a @ b.T
    if sim.shape[1] == 1:  # a single token (the 1x1 middle block): no choice to get wrong
        return sim.argmax(dim=1), math.inf
    top = sim.topk(2, dim=1).values
    return sim.argmax(dim=1), float((top[:, 0] - top[:, 1]).min())


def ddim_schedule(alphas_cumprod: torch.Tensor, steps: int) -> tuple[list[int], list[float]]:
    """SD's DDIM configuration ("leading" spacing, steps_offset 1, set_alpha_to_one false): sampling
    timesteps t_i = (steps - 1 - i) * (T // steps) + 1, and the N+1 noise levels of the states between
    them (alphas_cumprod at each t_i, then alphas_cumprod[0] for x_0). The table is the model's data."""
    T = len(alphas_cumprod)
    timesteps = [(steps - 1 - i) * (T // steps) + 1 for i in range(steps)]
    return timesteps, [float(alphas_cumprod[t]) for t in timesteps] + [float(alphas_cumprod[0])]


def ddim_sampling_step(x, eps, alpha_t: float, alpha_next: float):
    """DDIM (eta 0) from noise level alpha_t to alpha_next. diffusers' DDIMScheduler (the engine's
    sampler) keeps the schedule in float32 and takes the square roots there; the reference uses the
    same coefficients so that the comparison measures the engine, not float32 rounding of the table."""
    a_t, a_n = torch.tensor(alpha_t, dtype=torch.float32), torch.tensor(alpha_next, dtype=torch.float32)
    x0 = (x - float((1 - a_t).sqrt()) * eps) / float(a_t.sqrt())
    return float(a_n.sqrt()) * x0 + float((1 - a_n).sqrt()) * eps


def ddim_inversion_step(x, eps, alpha_from: float, alpha_to: float):
    """DDIM (eta 0) from alpha_from to alpha_to in float64 (Song et al. eq. 12, sigma 0)."""
    x0 = (x - math.sqrt(1 - alpha_from) * eps) / math.sqrt(alpha_from)
    return math.sqrt(alpha_to) * x0 + math.sqrt(1 - alpha_to) * eps


# --------------------------------------------------------------------------- processors on a UNet copy


@dataclass
class Pass:
    """What one UNet call of the reference does and what it records."""

    kind: str  # "plain" | "source" | "joint" | "frame" | "propagate"
    inject_qk: bool = False
    inject_f: bool = False
    donor: Pass | None = None  # the source pass whose q/k and residual an edit pass injects
    frames: list[int] = field(default_factory=list)  # propagate: frame indices of the batch
    keyframes: list[int] = field(default_factory=list)
    kf_source: Pass | None = None  # propagate: the keyframes' source pass (features)
    kf_edit: Pass | None = None  # propagate: the keyframes' edit pass (outputs)
    features: dict = field(default_factory=dict)  # layer -> (B, S, C) self-attention inputs
    qk: dict = field(default_factory=dict)  # layer -> (q, k) (B, S, C)
    residual: torch.Tensor | None = None
    outputs: dict = field(default_factory=dict)  # layer -> what the self-attention layer returned
    min_margin: float = math.inf  # smallest best/second-best cosine gap met by nearest neighbours


class RefSelfAttention:
    def __init__(self, layer: str, owner: RefUNet):
        self.layer, self.owner = layer, owner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        assert encoder_hidden_states is None and attention_mask is None and hidden_states.ndim == 3
        assert attn.group_norm is None and attn.spatial_norm is None and attn.norm_q is None
        p, x = self.owner.current, hidden_states
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        pnp = is_pnp_attention(self.layer)
        if p.kind == "source":
            p.features[self.layer] = x
            if pnp:
                p.qk[self.layer] = (q, k)
        if p.kind in ("joint", "frame") and p.inject_qk and pnp:
            q_src, k_src = p.donor.qk[self.layer]
            q, k = torch.cat([q_src, q_src]), torch.cat([k_src, k_src])  # both CFG halves
        out = torch.empty_like(q)
        if p.kind == "propagate":
            out = self._propagated(p, x)
        elif p.kind == "joint":
            K = len(x) // 2
            for g in range(2):
                rows = range(g * K, (g + 1) * K)
                k_all, v_all = torch.cat([k[j] for j in rows]), torch.cat([v[j] for j in rows])
                for j in rows:
                    out[j] = softmax_attention(q[j], k_all, v_all, attn.heads)
            out = attn.to_out[0](out)
        else:  # plain, source, frame: each frame attends to itself
            for j in range(len(x)):
                out[j] = softmax_attention(q[j], k[j], v[j], attn.heads)
            out = attn.to_out[0](out)
        if attn.residual_connection:
            out = out + hidden_states
        out = out / attn.rescale_output_factor
        p.outputs[self.layer] = out
        return out

    def _propagated(self, p: Pass, x):
        kf_feat = p.kf_source.features[self.layer]  # (K, S, C) source features of the keyframes
        kf_out = p.kf_edit.outputs[self.layer]  # (2K, S, C) their edit outputs, [negative, prompt]
        K, B = len(p.keyframes), len(p.frames)
        out = torch.zeros(2 * B, *kf_out.shape[1:], dtype=kf_out.dtype)
        for b, f in enumerate(p.frames):
            for kf, w in eq4_neighbours(f, p.keyframes):
                j = p.keyframes.index(kf)
                nn, margin = cosine_nearest(p.donor.features[self.layer][b], kf_feat[j])
                p.min_margin = min(p.min_margin, margin)
                for g in range(2):
                    out[g * B + b] += w * kf_out[g * K + j][nn]
        return out


class RefCrossAttention:
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        assert encoder_hidden_states is not None and attention_mask is None
        q, k, v = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        out = torch.stack([softmax_attention(q[j], k[j], v[j], attn.heads) for j in range(len(q))])
        out = attn.to_out[0](out)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class RefUNet:
    """A float64 deep copy of a diffusers UNet with the reference processors and resblock hook."""

    def __init__(self, unet):
        self.unet = copy.deepcopy(unet).eval()
        if self.unet.dtype != torch.float64:
            self.unet.to(torch.float64)
        self.current = Pass("plain")
        procs = {}
        for key in self.unet.attn_processors:
            layer = key[: -len(".processor")]
            procs[key] = RefSelfAttention(layer, self) if layer.endswith(".attn1") else RefCrossAttention()
        self.unet.set_attn_processor(procs)
        self.unet.get_submodule(PNP_RESBLOCK).register_forward_hook(self._resblock)

    def _resblock(self, module, args, output):
        p = self.current
        inp = args[0]
        skip = module.conv_shortcut(inp) if module.conv_shortcut is not None else inp
        if p.kind == "source":
            p.residual = output * module.output_scale_factor - skip
        elif p.kind in ("joint", "frame", "propagate") and p.inject_f:
            r = p.donor.residual
            return (skip + torch.cat([r, r])) / module.output_scale_factor
        return None

    @torch.no_grad()
    def __call__(self, p: Pass, latents, t: int, emb):
        self.current = p
        try:
            return self.unet(latents, t, encoder_hidden_states=emb).sample
        finally:
            self.current = Pass("plain")


# --------------------------------------------------------------------------- the edit


@dataclass
class StepResult:
    keyframes: list[int]
    eps_neg: torch.Tensor  # (N, 4, h, w) noise predictions of the two CFG halves
    eps_prompt: torch.Tensor
    eps: torch.Tensor  # guided
    x_next: torch.Tensor
    attention: dict  # layer -> (2, N, S, C) edit-pass self-attention outputs per frame
    min_margin: float  # nearest-neighbour distance from a tie (inf without propagation)


class ReferenceEditor:
    """unets: {"base", "identity", "directional"} -> UNet modules (copied to float64) or RefUNets.
    source_latents[i]: (N, 4, h, w) inverted latents at sampling step i (i = 0: x_T);
    alphas_cumprod: the model's noise-schedule table."""

    def __init__(self, unets: dict, method: str, source_latents, alphas_cumprod, emb_prompt, emb_negative, emb_source,
                 guidance_scale: float, interval: int, pnp_attn_t: float, pnp_f_t: float):
        self.source, self.edit_branch, self.inject, self.propagate = METHODS[method]
        self.unets = {name: u if isinstance(u, RefUNet) else RefUNet(u) for name, u in unets.items()}
        self.z = [z.double() for z in source_latents]
        self.timesteps, self.alphas = ddim_schedule(alphas_cumprod, len(self.z))
        self.emb = {"prompt": emb_prompt.double(), "negative": emb_negative.double(), "source": emb_source.double()}
        self.g, self.interval = guidance_scale, interval
        steps = len(self.timesteps)
        self.n_qk = int(steps * pnp_attn_t) if self.inject else 0
        self.n_f = int(steps * pnp_f_t) if self.inject else 0

    def _embs(self, which: str, n: int):
        return self.emb[which].expand(n, -1, -1)

    def _source_pass(self, frames, i) -> Pass:
        p = Pass("source")
        self.unets[self.source](p, self.z[i][frames], self.timesteps[i], self._embs("source", len(frames)))
        return p

    def _edit_pass(self, p: Pass, x, i):
        n = len(x)
        emb = torch.cat([self._embs("negative", n), self._embs("prompt", n)])
        eps = self.unets[self.edit_branch](p, torch.cat([x, x]), self.timesteps[i], emb)
        return eps[:n], eps[n:]

    def step(self, x: torch.Tensor, i: int, generator: torch.Generator | None) -> StepResult:
        """Edit step i from edit latents x (N, 4, h, w)."""
        x = x.double()
        N = len(x)
        qk, f = i < self.n_qk, i < self.n_f
        eps_neg, eps_prompt = torch.empty_like(x), torch.empty_like(x)
        attention, margin = {}, math.inf
        if self.propagate:
            kf = draw_keyframes(N, self.interval, generator)
            rest = [j for j in range(N) if j not in kf]
            kf_src = self._source_pass(kf, i)
            kf_edit = Pass("joint", inject_qk=qk, inject_f=f, donor=kf_src)
            eps_neg[kf], eps_prompt[kf] = self._edit_pass(kf_edit, x[kf], i)
            passes = [(kf, kf_edit)]
            if rest:
                src = self._source_pass(rest, i)
                prop = Pass("propagate", inject_f=f, donor=src, frames=rest, keyframes=kf, kf_source=kf_src, kf_edit=kf_edit)
                eps_neg[rest], eps_prompt[rest] = self._edit_pass(prop, x[rest], i)
                passes.append((rest, prop))
                margin = prop.min_margin
        else:
            kf, every = [], list(range(N))
            src = self._source_pass(every, i) if self.inject else None
            p = Pass("frame", inject_qk=qk, inject_f=f, donor=src)
            eps_neg[:], eps_prompt[:] = self._edit_pass(p, x, i)
            passes = [(every, p)]
        for frames, p in passes:
            for layer, out in p.outputs.items():
                full = attention.setdefault(layer, torch.empty(2, N, *out.shape[1:], dtype=out.dtype))
                full[:, frames] = out.view(2, len(frames), *out.shape[1:])
        eps = eps_neg + self.g * (eps_prompt - eps_neg)
        x_next = ddim_sampling_step(x, eps, self.alphas[i], self.alphas[i + 1])
        return StepResult(kf, eps_neg, eps_prompt, eps, x_next, attention, margin)

    def run(self, generator: torch.Generator | None) -> tuple[torch.Tensor, list[StepResult]]:
        """The whole edit from the inverted x_T."""
        x, results = self.z[0], []
        for i in range(len(self.timesteps)):
            r = self.step(x, i, generator)
            results.append(r)
            x = r.x_next
        return x, results


@torch.no_grad()
def reference_inversion_step(unet: RefUNet, x_next, t: int, cond, alpha_next: float, alpha_t: float):
    """One DDIM inversion step: from the state at alpha_next (less noisy) to alpha_t, the noise
    predicted at the less noisy state with timestep t (diffusers' DDIMInverseScheduler convention)."""
    eps = unet(Pass("plain"), x_next.double(), t, cond.double().expand(len(x_next), -1, -1))
    return ddim_inversion_step(x_next.double(), eps, alpha_next, alpha_t)


# --------------------------------------------------------------------------- what the pipeline did


class PipelineRecorder:
    """Hooks on the pipeline's UNets: every edit-pass UNet call's input latents and noise prediction,
    and every self-attention module's RESULT (forward hooks on the modules: the tensor that flows on,
    not what a processor reports). The pipeline's observer only labels them (step, mode, role)."""

    def __init__(self, unets, layers=None):
        self.now = None
        self.calls = []  # (step, mode, latents, eps)
        self.attn = []  # (step, mode, layer, output)
        self.handles = []
        for u in {id(u): u for u in unets}.values():
            self.handles.append(u.register_forward_hook(self._unet, with_kwargs=False))
            for name, m in u.named_modules():
                if name.endswith(".attn1") and (layers is None or name in layers):
                    self.handles.append(m.register_forward_hook(self._attention(name)))

    def observe(self, st, layer, q, k):
        self.now = (st.step, st.mode, st.role)

    def _unet(self, module, args, output):
        if self.now is not None and self.now[2] == "edit":
            self.calls.append((self.now[0], self.now[1], args[0].detach().clone(), output.sample.detach().clone()))

    def _attention(self, name):
        def hook(module, args, output):
            if self.now is not None and self.now[2] == "edit":
                self.attn.append((self.now[0], self.now[1], name, output.detach().clone()))
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()

    def per_step(self, n_frames: int, keyframes_per_step: list[list[int]], n_steps: int) -> list[dict]:
        """Per step: x (N, 4, h, w) edit input, eps_neg/eps_prompt (N, ...), attention {layer: (2, N, S, C)}.
        Rows map to frames by the pass order: keyframes (sorted), then the other frames in order."""
        out = []
        for i in range(n_steps):
            kf = keyframes_per_step[i] if keyframes_per_step else []
            order = {"keyframes": kf, "propagate": [j for j in range(n_frames) if j not in kf], "frame": list(range(n_frames))}
            rows: dict[str, list[int]] = {}
            x = eps_neg = eps_prompt = None
            for step, mode, lat, eps in self.calls:
                if step != i:
                    continue
                B = len(lat) // 2
                taken = rows.setdefault(mode, [])
                frames = order[mode][len(taken): len(taken) + B]
                taken.extend(frames)
                if x is None:
                    x = torch.full((n_frames, *lat.shape[1:]), float("nan"), dtype=lat.dtype)
                    eps_neg, eps_prompt = x.clone(), x.clone()
                x[frames], eps_neg[frames], eps_prompt[frames] = lat[:B], eps[:B], eps[B:]
            attention, arows = {}, {}
            for step, mode, layer, o in self.attn:
                if step != i:
                    continue
                B = len(o) // 2
                taken = arows.setdefault((mode, layer), [])
                frames = order[mode][len(taken): len(taken) + B]
                taken.extend(frames)
                full = attention.setdefault(layer, torch.full((2, n_frames, *o.shape[1:]), float("nan"), dtype=o.dtype))
                full[:, frames] = o.view(2, B, *o.shape[1:])
            out.append({"x": x, "eps_neg": eps_neg, "eps_prompt": eps_prompt, "attention": attention})
        return out
