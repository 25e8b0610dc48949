"""Report plots (PNG) and their data as CSV for `dvc plots`: time against frames, and per-frame
identity similarity to the original over time, one line per method."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fsio import atomic_path
from ..registry import method_order
from .tables import T2_PAPER
from ..metrics.outputs import write_csv


TIME_SERIES = ["invert_s", "edit_s", "total_s"]  # this run's curves (dvc.yaml plot time_vs_frames)
PAPER_TIME_METHODS = T2_PAPER  # the paper's Table 2 columns (dvc.yaml plot time_vs_frames_paper)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def time_vs_frames(timing: dict | None, paper: dict, out_dir: Path, subtitle: str) -> list[Path]:
    """Left: this run's invert/edit/total seconds against frames. Right: the paper's minutes."""
    plt = _pyplot()
    rows = (timing or {}).get("rows", [])
    data = [{"series": f"this run: {k}", "frames": r["frames"], "seconds": r[f"{k}_s"]}
            for r in rows for k in ("invert", "edit", "total") if r.get(f"{k}_s") is not None]
    p2 = paper["table2_time"]
    data += [{"series": f"paper ({p2['hardware']}): {m}", "frames": r["frames"], "seconds": r[m] * 60.0}
             for r in p2["rows"] for m in PAPER_TIME_METHODS]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for series in dict.fromkeys(d["series"] for d in data):
        pts = sorted((d["frames"], d["seconds"]) for d in data if d["series"] == series)
        ax = axes[0] if series.startswith("this run") else axes[1]
        scale = 1.0 if ax is axes[0] else 1 / 60.0
        ax.plot([p[0] for p in pts], [p[1] * scale for p in pts], marker="o", label=series.split(": ", 1)[1])
    axes[0].set(title="this run" + ("" if rows else " (no timing output)"), xlabel="frames", ylabel="seconds")
    axes[1].set(title=f"paper ({p2['hardware']})", xlabel="frames", ylabel="minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(subtitle, fontsize=9)
    png = out_dir / "time_vs_frames.png"
    _save(fig, png)
    # wide CSVs, one column per curve, for `dvc plots` (x: frames)
    keys = ["frames", "seconds_video", *TIME_SERIES, "peak_mem_mb"]
    write_csv(out_dir / "time_vs_frames.csv", [{k: r.get(k) for k in keys} for r in rows], keys)
    write_csv(out_dir / "time_vs_frames_paper.csv",
              [{"frames": r["frames"], **{f"{m}_min": r[m] for m in PAPER_TIME_METHODS}} for r in p2["rows"]],
              ["frames", *(f"{m}_min" for m in PAPER_TIME_METHODS)])
    return [png, out_dir / "time_vs_frames.csv", out_dir / "time_vs_frames_paper.csv"]


def identity_over_time(frames: list[dict], recognizer: str, out_dir: Path, subtitle: str,
                       empty_reason: str = "no frame was compared") -> list[Path]:
    """Mean (over a method's edited videos) cosine similarity of each edited frame to the original
    frame at the same time, against time, for one recogniser; an empty plot states `empty_reason`."""
    plt = _pyplot()
    rows = [f for f in frames if f["recognizer"] == recognizer]
    methods = method_order(list(dict.fromkeys(f["method"] for f in rows)))
    data = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in methods:
        by_t: dict[float, list[float]] = {}
        for f in rows:
            if f["method"] == m:
                by_t.setdefault(round(float(f["time_s"]), 6), []).append(float(f["similarity"]))
        ts = sorted(by_t)
        ys = [float(np.mean(by_t[t])) for t in ts]
        data += [{"method": m, "time_s": t, "similarity": round(y, 6), "videos": len(by_t[t])} for t, y in zip(ts, ys)]
        ax.plot(ts, ys, marker=".", label=m)
    ax.set(xlabel="time (s)", ylabel=f"cosine similarity to original ({recognizer})", title="identity over time")
    if not rows:  # an empty panel says why
        ax.text(0.5, 0.5, f"no data: {empty_reason}", transform=ax.transAxes, ha="center", va="center", wrap=True)
    ax.grid(alpha=0.3)
    if methods:
        ax.legend(fontsize=8)
    fig.suptitle(subtitle, fontsize=9)
    png, csv = out_dir / "identity_over_time.png", out_dir / "identity_over_time.csv"
    _save(fig, png)
    # wide CSV for `dvc plots`: x = time_s, one column per method (empty where it has no frame then)
    times = sorted({d["time_s"] for d in data})
    wide = [{"time_s": t} | {d["method"]: d["similarity"] for d in data if d["time_s"] == t} for t in times]
    write_csv(csv, wide, ["time_s", *methods])
    return [png, csv]
