"""True-size rehearsal without a GPU: FLOPs and peak live bytes per phase against video length.

    python benchmarks/true_size_rehearsal.py --frames 300 600 900 1200 \\
        --out benchmarks/results/rehearsal_true_size_bf16.json --plot benchmarks/results/rehearsal_true_size_bf16.png

SD 2.1-base architecture (865.9M-parameter UNet) on the meta device, 512x512, bf16, 50 inversion + 50
edit steps, method `ours`: the real inversion functions, the real `IPFaceDiffPipeline.__call__` (real
processors, hooks, injection, propagation) and the real streamed decode, under
torch's FlopCounterMode and a dispatch-level live-bytes tracker (`ipfacediff.diffusion.rehearsal`).
Each distinct UNet call shape runs once; repeats are replayed (FLOPs added, transient peak applied,
left-behind tensors allocated), the call counts are exact. `--validate` first checks the method on
the tiny architecture against a real CPU run (FLOPs exactly equal, peak bytes within a tolerance).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TFLOP = 1e12
GIB = 1024**3
# inversion (1 forward) + edit (3 forwards: source, uncond, cond) per frame and step, no joint attention
FLOOR_TFLOP_PER_FRAME_STEP = (1, 3)
PROMPTS = ["a person wearing glasses", "an old person", "a person with a beard", "a smiling person"]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["true_size", "tiny"], default="true_size")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, nargs="+", default=[300, 600, 900, 1200])
    ap.add_argument("--steps", type=int, default=50, help="edit steps")
    ap.add_argument("--invert-steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--keyframe-interval", type=int, default=8)
    ap.add_argument("--method", default="ours")
    ap.add_argument("--ff-chunk", type=int,
                    help="edit.ff_chunk: latents per feed-forward chunk in the keyframe pass (0: off; default: the config's)")
    ap.add_argument("--keyframe-attention", choices=["auto", "exact", "bounded"], default="exact",
                    help="edit.keyframe_attention (default exact: the rows without the bounded mode)")
    ap.add_argument("--group-size", type=int, help="edit.keyframe_group_size (default: the config's)")
    ap.add_argument("--anchors", type=int, help="edit.keyframe_anchors (default: the config's)")
    ap.add_argument("--memory-gib", type=float, help="edit.keyframe_memory_gib (default: the config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompts", type=int, default=1, help="P prompts edited in one run sharing the source pass")
    ap.add_argument("--validate", action="store_true", help="first compare against a real CPU run of the tiny models")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="print the README table of these result files and exit")
    ap.add_argument("--out")
    ap.add_argument("--plot", help="PNG: FLOPs and peak bytes against frames")
    return ap.parse_args(argv)


def forward_tflop(components, size: int) -> float:
    """FLOPs of one UNet forward on one latent (the floor's unit), measured the same way."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ipfacediff.diffusion.rehearsal import FLOP_FORMULAS, FusedAttentionOnMeta

    s = components.vae_scale
    x = torch.empty(1, 4, size // s, size // s, device=components.device, dtype=components.dtype)
    text = torch.empty(1, 77, components.unet.config.cross_attention_dim, device=components.device, dtype=components.dtype)
    with torch.no_grad(), FusedAttentionOnMeta(), FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as fc:
        components.unet(x, 1, encoder_hidden_states=text)
    return fc.get_total_flops() / TFLOP


def derive(row: dict, unet_tflop: float, steps: int, invert_steps: int, weights: int) -> dict:
    n = row["frames"]
    floor = unet_tflop * (invert_steps * FLOOR_TFLOP_PER_FRAME_STEP[0] + steps * FLOOR_TFLOP_PER_FRAME_STEP[1])
    per_frame = row["flops"]["total"] / n / TFLOP
    return {
        **row,
        "tflop_total": round(row["flops"]["total"] / TFLOP, 1),
        "tflop_per_frame": round(per_frame, 2),
        "floor_tflop_per_frame": round(floor, 2),
        "per_frame_over_floor": round(per_frame / floor, 4),
        "peak_gib_activations": round(row["peak_bytes"]["max"] / GIB, 3),
        "peak_gib_with_weights": round((row["peak_bytes"]["max"] + weights) / GIB, 3),
        "peak_gib_by_phase": {k: round(v / GIB, 3) for k, v in row["peak_bytes"].items()},
    }


def targets(rows: list[dict]) -> dict:
    by_n = {r["frames"]: r for r in rows}
    if 300 not in by_n or 1200 not in by_n:
        return {}
    a, b = by_n[300], by_n[1200]
    peak_a, peak_b = a["peak_gib_with_weights"], b["peak_gib_with_weights"]
    return {
        "peak_1200_over_300": {"value": round(peak_b / peak_a, 3), "target": "<= 1.1", "met": peak_b / peak_a <= 1.1},
        "peak_1200_gib": {"value": peak_b, "target": "<= 20", "met": peak_b <= 20},
        "flops_1200_over_300": {"value": round(b["tflop_total"] / a["tflop_total"], 3), "target": "<= 4.2",
                                "met": b["tflop_total"] / a["tflop_total"] <= 4.2},
        "per_frame_1200_over_300": {"value": round(b["tflop_per_frame"] / a["tflop_per_frame"], 4), "target": "<= 1.05",
                                    "met": b["tflop_per_frame"] / a["tflop_per_frame"] <= 1.05},
    }


def edit_config(args, **kw):
    """EditConfig of the command line's edit options (others: the config's defaults)."""
    from ipfacediff.diffusion.pipeline import EditConfig

    opts = {"ff_chunk": args.ff_chunk, "keyframe_group_size": args.group_size, "keyframe_anchors": args.anchors,
            "keyframe_memory_gib": args.memory_gib}
    return EditConfig(methods=[args.method], keyframe_attention=args.keyframe_attention, **{k: v for k, v in opts.items() if v is not None},
                      **kw)


def validate(args) -> dict:
    """Tiny architecture: real CPU run (every call executed, real weights) against the rehearsal."""
    import dataclasses
    import tempfile

    import torch

    from ipfacediff.diffusion import models as M
    from ipfacediff.diffusion import rehearsal as R
    from ipfacediff.diffusion.branches import BranchSet
    from ipfacediff.diffusion.timing import synthetic_frames

    n, steps, size = 14, 3, 64
    cfg = edit_config(args, steps=steps, batch_size=2)  # small batches: repeated call shapes
    if args.keyframe_attention == "bounded":  # 14 frames: 4 keyframes in groups of 2 + 1 anchor, so the tiny run is bounded too
        cfg = dataclasses.replace(cfg, keyframe_interval=4, keyframe_group_size=2, keyframe_anchors=1)
    with tempfile.TemporaryDirectory() as tmp:
        M.build_tiny(Path(tmp) / "base", seed=args.seed, sample_size=size)
        comps = M.load_components(Path(tmp) / "base", "cpu", torch.float32)
        real = R.measure_real(comps, BranchSet(base=comps.unet), synthetic_frames(n, size, args.seed), cfg, steps, steps,
                              invert_batch_size=4, method=args.method, seed=args.seed, work_dir=tmp)
    meta = R.rehearse(R.meta_components("tiny", torch.float32, size), n, cfg, steps, steps, invert_batch_size=4,
                      method=args.method, seed=args.seed, size=size)
    diff = {k: meta["peak_bytes"][k] - real["peak_bytes"][k] for k in real["peak_bytes"]}
    return {"config": {"arch": "tiny", "frames": n, "steps": steps, "size": size, "batch_size": 2, "invert_batch_size": 4,
                       "keyframe_attention": real["keyframe_attention"]},
            "flops_equal": real["flops"] == meta["flops"], "real": real, "rehearsal": meta, "peak_bytes_rehearsal_minus_real": diff}


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["frames"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("invert", "anchor_pass", "keyframe_pass", "propagation_pass", "decode", "total"):
        a.plot(n, [r["flops"].get(key, 0) / 1e15 for r in rows], marker="o", label=key)
    a.plot(n, [r["floor_tflop_per_frame"] * f / 1e3 for r, f in zip(rows, n)], "k--", label="floor (no joint attention)")
    a.set(xlabel="frames", ylabel="PFLOP", title="FLOPs per phase")
    a.legend(fontsize=7)
    for key in ("invert", "anchor_pass", "keyframe_pass", "propagation_pass", "decode"):
        b.plot(n, [r["peak_gib_by_phase"].get(key, 0) for r in rows], marker="o", label=key)
    b.plot(n, [r["peak_gib_with_weights"] for r in rows], "k-", marker="s", label="max + weights")
    b.set(xlabel="frames", ylabel="GiB", title="peak live tensor bytes")
    b.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    from ipfacediff.fsio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def attention_label(row: dict) -> str:
    """'exact', or 'bounded G=16 A=4' (rows from before the bounded mode existed are exact)."""
    kfa = row.get("keyframe_attention")
    if not kfa or kfa["used"] != "bounded":
        return "exact"
    return f"bounded G={kfa['group_size']} A={kfa['anchors']}"


def table(paths: list[str]) -> str:
    """Markdown rows (one per file and length) of the committed results."""
    lines = ["| file | keyframe attention | ff_chunk | prompts | frames | K/step | TFLOP total | TFLOP/frame (floor) "
             "| peak GiB by phase: invert / keyframe / propagation / decode | peak GiB + weights | rehearsal wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        res = json.loads(Path(path).read_text())
        for r in res["rows"]:
            ph = r["peak_gib_by_phase"]
            lines.append(
                f"| `{Path(path).name}` | {attention_label(r)} | {res.get('edit_config', {}).get('ff_chunk', 0)} | {res.get('prompts', 1)} "
                f"| {r['frames']} | {r['keyframes_per_step']} | "
                f"{r['tflop_total']:,.0f} | {r['tflop_per_frame']:.1f} ({r['floor_tflop_per_frame']:.1f}) | "
                f"{ph.get('invert', 0):.2f} / {ph.get('keyframe_pass', 0):.2f} / "
                f"{ph.get('propagation_pass', 0):.2f} / {ph.get('decode', 0):.2f} | "
                f"{r['peak_gib_with_weights']:.2f} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    if args.table:
        print(table(args.table))
        return 0
    if not args.out:
        raise SystemExit("--out is required (unless --table)")
    import dataclasses

    import torch

    from ipfacediff.diffusion import models as M
    from ipfacediff.diffusion import rehearsal as R
    from ipfacediff.diffusion.timing import hardware_info
    from ipfacediff.fsio import write_json
    from ipfacediff.portable import portable_record

    t_all = time.perf_counter()
    result: dict = {"command": "python benchmarks/true_size_rehearsal.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.validate:
        t0 = time.perf_counter()
        result["validation"] = {**validate(args), "wall_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps({k: result["validation"][k] for k in ("flops_equal", "peak_bytes_rehearsal_minus_real")}))
    dtype = M.resolve_dtype(args.dtype)
    comps = R.meta_components(args.arch, dtype, args.size)
    cfg = edit_config(args, steps=args.steps, batch_size=args.batch_size, keyframe_interval=args.keyframe_interval)
    unet_tflop = forward_tflop(comps, args.size)
    weights = sum(R.weight_bytes(comps, m) for m in ("unet", "vae", "text_encoder"))
    memo: dict = {}
    rows = []
    for n in sorted(args.frames):
        t0 = time.perf_counter()
        prompts = PROMPTS[0] if args.prompts == 1 else [PROMPTS[i % len(PROMPTS)] + f" ({i})" for i in range(args.prompts)]
        row = R.rehearse(comps, n, cfg, args.steps, args.invert_steps, args.batch_size, args.method, args.seed, prompts, args.size,
                         memo=memo)
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        rows.append(derive(row, unet_tflop, args.steps, args.invert_steps, weights))
        print(json.dumps({k: rows[-1][k] for k in ("frames", "tflop_per_frame", "peak_gib_with_weights", "wall_s")}), flush=True)
    result.update({
        "arch": args.arch, "unet_params": sum(p.numel() for p in comps.unet.parameters()), "dtype": args.dtype, "size": args.size,
        "steps": args.steps, "invert_steps": args.invert_steps, "batch_size": args.batch_size, "keyframe_interval": args.keyframe_interval,
        "method": args.method, "prompts": args.prompts, "keyframe_attention": args.keyframe_attention,
        "edit_config": dataclasses.asdict(cfg),
        "unet_forward_tflop": round(unet_tflop, 4), "weights_bytes": weights,
        "distinct_call_shapes_measured": len(memo), "hardware": hardware_info(torch.device("cpu")),
        "wall_s": round(time.perf_counter() - t_all, 1), "rows": rows, "targets": targets(rows),
        "notes": [
            "meta device: no data; FLOPs from torch.utils.flop_counter.FlopCounterMode (2 x multiply-adds), attention as a fused kernel",
            "peak bytes: live tensor storages (512-byte blocks) as an ideal caching allocator sees them; weights listed apart",
            "each distinct UNet pass-pair / inversion-batch shape measured once, repeats replayed; call counts exact",
            "host-side work (frame hashing, cache file writes, video encoding) is not device work and is not counted",
        ],
    })
    write_json(args.out, portable_record(result))  # no machine paths in committed results
    if args.plot:
        title = (f"{args.arch} {args.size}px {args.dtype}, {args.invert_steps}+{args.steps} steps, method {args.method}, "
                 f"keyframe attention {attention_label(rows[-1])} (meta-device rehearsal)")
        plot(rows, args.plot, title)
    print(json.dumps(result["targets"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
