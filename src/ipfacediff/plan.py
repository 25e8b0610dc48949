"""`ipfacediff plan`: what a profile will compute, and an ESTIMATE of its GPU hours, before anything runs.

Counts come from the composed parameters (conf/ + overrides, as `dvc exp run -S` composes them):
videos, frames per video, prompts, methods, inversions, edits and training steps. Costs come from
FLOP counts, not from timing this machine:

- SD 2.1-base UNet, one 64x64x4 latent (512x512 image): 0.804 TFLOP per forward (REFERENCE.md section 9,
  torch FlopCounterMode). Convolutions and linear layers scale with the latent area, so a crop of side
  s costs 0.804 x (s / 512)^2 (self-attention grows faster; at 512 px the figure is measured).
- Inversion: one forward per frame per DDIM step (no guidance).
- Editing: three forwards per frame per step (source pass, unconditional, conditional; the same bound
  for every method) plus the joint keyframe attention, 2.45e11 x K^2 FLOP per step at 512 px with
  K = ceil(frames / keyframe_interval) keyframes, scaled by (s / 512)^4 (tokens squared). Where the
  editor's own rule (edit.keyframe_attention) picks bounded attention, groups of G keyframes attend to
  G + A keyframes (A anchors, plus an anchor pass of 3 forwards per anchor): linear in frames.
- Training: forward + backward ~ 3 forwards per face per iteration (the usual 1 + 2 rule; LoRA skips
  most weight gradients, so this is an upper bound), batch faces per iteration.
VAE, text encoder, recognisers, CLIP and metrics are not counted (small beside the UNet at 512 px).

GPU hours = FLOP / (peak x utilisation). The default assumption is an H100 SXM's dense bf16 peak,
989 TFLOP/s, at 40% utilisation; both are options. Cross-check: at A100 peak (312 TFLOP/s) and 40%
this gives 0.70 frames/s for a 300-frame, 50-step edit; the paper measured 0.83 frames/s.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

UNET_TFLOP_512 = 0.804  # per forward, 64x64x4 latent (REFERENCE.md section 9)
EDIT_FORWARDS = 3  # source, unconditional, conditional
KEYFRAME_ATTN_FLOP_512 = 2.45e11  # x K^2 per denoising step, both guidance halves, 16 layers
TRAIN_FORWARD_EQUIV = 3  # forward + backward
DEFAULT_PEAK_TFLOPS = 989.0  # H100 SXM dense bf16
DEFAULT_UTILISATION = 0.4


@dataclass
class Line:
    what: str
    count: int  # jobs (inversions, edits) or optimizer iterations
    detail: str
    tflop: float
    gpu_hours: float = 0.0


@dataclass
class Plan:
    profile: str
    videos: int
    frames_per_video: int
    prompts: int
    methods: list[str]
    lines: list[Line] = field(default_factory=list)
    peak_tflops: float = DEFAULT_PEAK_TFLOPS
    utilisation: float = DEFAULT_UTILISATION

    @property
    def total_gpu_hours(self) -> float:
        return sum(line.gpu_hours for line in self.lines)

    def as_dict(self) -> dict:
        return {**asdict(self), "total_gpu_hours": self.total_gpu_hours, "estimate": True}


def unet_tflop(crop: int) -> float:
    return UNET_TFLOP_512 * (crop / 512) ** 2


def keyframe_groups(frames: int, interval: int, crop: int, edit: dict | None, prompts: int = 1, itemsize: int = 2) -> list[int]:
    """Keyframes per joint-attention group of one step: [K] in exact mode, groups of at most
    `edit.keyframe_group_size` in bounded mode, chosen by the editor's own rule
    (diffusion/keyframe_attention.py) on the SD 2.1-base architecture at this crop."""
    k = math.ceil(frames / max(1, interval))
    if not edit or "keyframe_attention" not in edit:
        return [k]
    from .diffusion.architectures import sd21_unet_config
    from .diffusion.keyframe_attention import resolve_keyframe_attention

    choice = resolve_keyframe_attention(sd21_unet_config(crop // 8), (crop // 8, crop // 8), frames, interval,
                                        edit["keyframe_attention"], int(edit["keyframe_group_size"]), int(edit["keyframe_anchors"]),
                                        float(edit["keyframe_memory_gib"]), 2, prompts, itemsize)
    if not choice.bounded:
        return [k]
    g = int(edit["keyframe_group_size"])
    return [g] * (k // g) + ([k % g] if k % g else [])


def keyframe_attention_tflop(frames: int, interval: int, crop: int, edit: dict | None = None, prompts: int = 1,
                             itemsize: int = 2) -> float:
    """Joint keyframe attention per step: C x (query keyframe, key keyframe) pairs. Exact: K^2. Bounded:
    each group of g attends to g + A keyframes, plus the anchor pass's A^2."""
    groups = keyframe_groups(frames, interval, crop, edit, prompts, itemsize)
    if len(groups) == 1:
        pairs = groups[0] ** 2
    else:
        a = int(edit["keyframe_anchors"])
        pairs = sum(g * (g + a) for g in groups) + a * a
    return KEYFRAME_ATTN_FLOP_512 * pairs * (crop / 512) ** 4 / 1e12


def inversion_tflop(frames: int, steps: int, crop: int) -> float:
    return frames * steps * unet_tflop(crop)


def edit_tflop(frames: int, steps: int, crop: int, interval: int, edit: dict | None = None, prompts: int = 1,
               itemsize: int = 2) -> float:
    """UNet forwards (3 per frame; bounded mode adds 3 per anchor for the anchor pass) + keyframe attention."""
    anchors = 0
    if len(keyframe_groups(frames, interval, crop, edit, prompts, itemsize)) > 1:
        anchors = int(edit["keyframe_anchors"])
    forwards = EDIT_FORWARDS * (frames + anchors) * unet_tflop(crop)
    return steps * (forwards + keyframe_attention_tflop(frames, interval, crop, edit, prompts, itemsize))


def training_tflop(steps: int, batch: int, grad_accum: int, crop: int) -> float:
    return steps * batch * grad_accum * TRAIN_FORWARD_EQUIV * unet_tflop(crop)


def frames_per_video(data: dict, given: int | None) -> int:
    """Frames per evaluation video: max_seconds x fps when both are set, else `given` (--frames)."""
    if given:
        return int(given)
    seconds, fps = data.get("max_seconds"), data.get("fps")
    if seconds and fps:
        return math.floor(float(seconds) * float(Fraction(str(fps))) + 1e-9)
    from .errors import InputError

    raise InputError("params.yaml", "data.max_seconds / data.fps do not fix the video length: give --frames N")


def n_videos(data: dict) -> int:
    if data.get("videos"):
        return len(data["videos"])
    if data.get("source") == "user" and data.get("celebv_eval_list") and Path(data["celebv_eval_list"]).is_file():
        return sum(1 for s in Path(data["celebv_eval_list"]).read_text().splitlines() if s.strip() and not s.startswith("#"))
    return int(data.get("n_eval_videos", 0))


def make_plan(params: dict, frames: int | None = None, peak_tflops: float = DEFAULT_PEAK_TFLOPS,
              utilisation: float = DEFAULT_UTILISATION, prompts_file: str | Path | None = None) -> Plan:
    from .prompts import EDIT_PROMPTS, select_prompts

    data, edit, inv = params["data"], params["edit"], params["invert"]
    crop = int(data["crop_size"])
    f = frames_per_video(data, frames)
    v = n_videos(data)
    prompts = select_prompts(edit["prompts"], prompts_file or EDIT_PROMPTS)
    methods = list(edit["methods"])
    plan = Plan(str(params.get("profile", "?")), v, f, len(prompts), methods, peak_tflops=peak_tflops, utilisation=utilisation)
    for branch, key in (("identity", "finetune_id"), ("directional", "finetune_dir")):
        t = params[key]
        if t.get("enabled", True):
            plan.lines.append(Line(f"train {branch} branch", int(t["steps"]),
                                   f"{t['steps']} iterations x batch {t['batch_size']} x accum {t.get('grad_accum', 1)}",
                                   training_tflop(int(t["steps"]), int(t["batch_size"]), int(t.get("grad_accum", 1)), crop)))
    id_tuned = params["finetune_id"].get("enabled", True)
    n_inv = v * (2 if id_tuned and inv.get("base_for_tokenflow", True) and "tokenflow" in methods else 1)
    plan.lines.append(Line("invert", n_inv, f"{n_inv} videos x {f} frames x {inv['steps']} steps",
                           n_inv * inversion_tflop(f, int(inv["steps"]), crop)))
    n_edits = v * len(prompts) * len(methods)
    itemsize = 4 if str(params.get("models", {}).get("dtype", "float16")) == "float32" else 2
    per_pass = min(len(prompts), int(edit.get("prompts_per_pass", 1)))
    plan.lines.append(Line("edit", n_edits, f"{v} videos x {len(prompts)} prompts x {len(methods)} methods, "
                                            f"{f} frames x {edit['steps']} steps",
                           n_edits * edit_tflop(f, int(edit["steps"]), crop, int(edit["keyframe_interval"]), edit, per_pass, itemsize)))
    timing = params.get("timing", {})
    if timing.get("frames"):
        t_flop = sum(inversion_tflop(n, int(inv["steps"]), crop)
                    + edit_tflop(n, int(edit["steps"]), crop, int(edit["keyframe_interval"]), edit, 1, itemsize)
                     for n in timing["frames"])
        lengths = ", ".join(map(str, timing["frames"]))
        plan.lines.append(Line("timing", len(timing["frames"]), f"invert + edit at {lengths} frames", t_flop))
    for line in plan.lines:
        line.gpu_hours = line.tflop / (peak_tflops * utilisation) / 3600
    return plan


def render(plan: Plan) -> str:
    rows = [f"plan for profile {plan.profile}: {plan.videos} videos x {plan.frames_per_video} frames, "
            f"{plan.prompts} prompts, {len(plan.methods)} methods ({', '.join(plan.methods)})",
            f"{'step':<26}{'count':>8}  {'PFLOP':>10}  {'GPU h (est.)':>12}  detail"]
    for line in plan.lines:
        rows.append(f"{line.what:<26}{line.count:>8}  {line.tflop / 1e3:>10.3f}  {line.gpu_hours:>12.3g}  {line.detail}")
    rows.append(f"{'total':<26}{'':>8}  {sum(x.tflop for x in plan.lines) / 1e3:>10.3f}  {plan.total_gpu_hours:>12.3g}")
    rows.append(f"ESTIMATE: UNet FLOPs only (REFERENCE.md section 9) at {plan.peak_tflops:g} TFLOP/s x "
                f"{plan.utilisation:.0%} utilisation; VAE, text encoder, recognisers and metrics not counted.")
    return "\n".join(rows)


# --------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="jobs and estimated GPU hours of a profile, before anything runs")
    p.add_argument("overrides", nargs="*", help="Hydra overrides as for `dvc exp run -S`, e.g. profile=paper edit.prompts=all")
    p.add_argument("--params", help="read a composed params.yaml instead of composing conf/ with the overrides")
    p.add_argument("--frames", type=int, help="frames per video when data.max_seconds/fps do not fix it")
    p.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS, help="GPU peak (default: H100 SXM dense bf16, 989)")
    p.add_argument("--utilisation", type=float, default=DEFAULT_UTILISATION, help="fraction of peak achieved (default 0.4)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from .config import compose, load_params
    from .errors import InputError

    if not 0 < args.utilisation <= 1 or args.peak_tflops <= 0:
        raise InputError(None, "--utilisation must be in (0, 1] and --peak-tflops > 0")
    if args.params and args.overrides:
        raise InputError(args.params, "give either --params or overrides, not both")
    try:
        params = load_params(args.params) if args.params else compose(args.overrides)
    except InputError:
        raise
    except Exception as e:  # Hydra's override errors
        raise InputError(None, f"cannot compose the parameters: {str(e).splitlines()[0]}") from e
    plan = make_plan(params, args.frames, args.peak_tflops, args.utilisation)
    print(json.dumps(plan.as_dict(), indent=1) if args.json else render(plan))
    return 0
