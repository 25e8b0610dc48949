"""Data card: what went into the pipeline (media, prepped videos, training faces), with a crop-track
plot per video showing the crop centre and scale before and after temporal smoothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..face.detect import DETECTOR_NAME, YUNET_SHA256
from ..face.smooth import transforms_to_params
from ..face.track import Track
from ..fsio import atomic_path, write_text
from ..layout import META


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "not found (run the stage that writes it)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e.msg})") from e


def plot_track(track: Track, title: str, path: Path) -> None:
    """Crop centre x, y (frame px) and crop scale over frames: raw vs smoothed; gaps marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw, smooth = transforms_to_params(track.raw, track.crop_size), transforms_to_params(track.smoothed, track.crop_size)
    t = np.arange(track.n_frames)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3), constrained_layout=True)
    for ax, j, label in zip(axes, (0, 1, 2), ("crop centre x (px)", "crop centre y (px)", "crop scale")):
        f = np.exp if j == 2 else (lambda v: v)
        ax.plot(t, f(raw[:, j]), ".-", color="0.6", lw=1, label="raw")
        ax.plot(t, f(smooth[:, j]), "-", color="C0", lw=2, label=f"smoothed (sigma {track.sigma:g})")
        gaps = ~track.detected
        if gaps.any():
            ax.plot(t[gaps], f(raw[gaps, j]), "x", color="C3", label="no face (interpolated)")
        ax.set_xlabel("frame")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def build_data_card(media_dir: str | Path, prepped_dir: str | Path, faces_dir: str | Path,
                    out_md: str | Path, plots_dir: str | Path, profile: str) -> str:
    media_dir, prepped_dir, faces_dir = Path(media_dir), Path(prepped_dir), Path(faces_dir)
    out_md, plots_dir = Path(out_md), Path(plots_dir)
    manifest = _load_json(media_dir / "manifest.json")
    index = _load_json(prepped_dir / "index.json")
    faces = _load_json(faces_dir / "summary.json")
    rel = Path("plots") / plots_dir.name if plots_dir.parent == out_md.parent / "plots" else plots_dir
    lines = [
        f"# Data card ({profile} profile)", "",
        f"Profile `{profile}`"
        + (": real face clips from package registries, cut short; numbers describe the data preparation, not the method."
           if manifest.get("source") == "sample" else ": user-provided CelebA-HQ / CelebV-HQ."),
        f"Models used: face detector {DETECTOR_NAME}, full sha256 `{YUNET_SHA256}` (no other model runs here); 5-point similarity alignment to the "
        f"ArcFace template at {index['crop_size']} px; crop transforms smoothed over time with a Gaussian (STIT-style).",
        "", "## Media", "", "| id | kind | file | sha256 | source | license |", "|---|---|---|---|---|---|",
    ]
    for m in manifest["media"]:
        sha = f"`{m['sha256'][:16]}...`" if m.get("sha256") else "-"
        lines.append(f"| {m['id']} | {m['kind']} | {m['file']} | {sha} | {m['source']} | {m['license']} |")
    lines += ["", "## Prepped videos", "",
              "Jitter: mean |second temporal difference| of the crop corners, in frame pixels "
              "(shake of the crop window; steady motion scores 0).", "",
              "| video | frames | fps (source) | size | audio | faces found | interpolated | jitter raw | jitter smoothed | plot |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for v in index["videos"]:
        meta = _load_json(prepped_dir / v["dir"] / META)
        track = Track.load(prepped_dir / v["dir"] / "track.npz")
        plot = plots_dir / f"{v['id']}_crop_track.png"
        plot_track(track, f"{v['id']}: crop track ({meta['frames']} frames at {meta['fps']} fps)", plot)
        j = meta["jitter_px"]
        lines.append(
            f"| {v['id']} | {meta['frames']} | {meta['fps']} ({meta['source_fps']}) | {meta['size'][0]}x{meta['size'][1]} "
            f"| {'yes' if meta['audio'] else 'no'} | {meta['faces_found']}/{meta['frames']} | {meta['frames_interpolated']} "
            f"| {j['raw']:.3f} | {j['smoothed']:.3f} | [png]({rel / plot.name}) |")
    lines += ["", "## Training faces", "",
              f"{faces['n_images']} aligned faces at {faces['crop_size']} px from {len(faces['identities'])} identities "
              f"({', '.join(faces['identities'])}); {faces['n_skipped']} candidate images skipped (no usable face)."]
    for s in faces["skipped"][:20]:
        lines.append(f"- skipped {s['image']} ({s['source']}): {s['reason']}")
    if faces["n_skipped"] > 20:
        lines.append(f"- ... and {faces['n_skipped'] - 20} more (data/faces/summary.json)")
    text = "\n".join(lines) + "\n"
    write_text(out_md, text)
    return text
