"""Training data: aligned faces (data/faces) joined with their captions (data/captions/faces.jsonl).

Images are checked once when the dataset is built: unreadable files, wrong sizes and images the
caption stage skipped (no face found) are left out AND counted, with the reason per file; an empty
result is an InputError. Batches follow a pure function of (seed, step), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError


@dataclass
class FaceSet:
    """The usable training faces and what was left out."""

    root: Path
    images: list[str]  # paths relative to root, as in index.csv
    captions: list[str]
    crop_size: int
    crop_scale: float
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def skipped_counts(self) -> dict[str, int]:
        return count_reasons(self.skipped)


def count_reasons(skipped: list[dict]) -> dict[str, int]:
    """{reason kind (text before ':'): count} of skipped items."""
    counts: dict[str, int] = {}
    for s in skipped:
        key = s["reason"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def read_index(faces_dir: str | Path) -> tuple[list[dict], dict]:
    """Rows of faces_dir/index.csv and faces_dir/summary.json (crop size/scale), or InputError."""
    faces_dir = Path(faces_dir)
    if not faces_dir.is_dir():
        raise InputError(faces_dir, "face dataset folder not found (run `dvc repro prep_faces`)")
    index = faces_dir / "index.csv"
    if not index.is_file():
        raise InputError(index, "face index not found (run `dvc repro prep_faces`)")
    with open(index, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "image" not in rows[0]:
        raise InputError(index, "empty face index or no 'image' column")
    summary_file = faces_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return rows, summary


def read_captions(path: str | Path, key: str = "image") -> dict[str, str]:
    """{image or video: caption} from a captions JSONL, or InputError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "captions file not found (run `dvc repro caption`)")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out[str(rec[key])] = str(rec["caption"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(path, f"line {n}: expected {{\"{key}\", \"caption\", \"source\"}} JSON ({e})") from e
    return out


def caption_skips(captions_file: str | Path) -> dict[str, str]:
    """Reasons the caption stage left images out (its summary.json beside the JSONL)."""
    summary = Path(captions_file).with_name("summary.json")
    if not summary.is_file():
        return {}
    data = json.loads(summary.read_text())
    return {s["image"]: s["reason"] for s in data.get("faces", {}).get("skipped", [])}


def load_rgb(path: Path) -> np.ndarray | None:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else np.ascontiguousarray(img[:, :, ::-1])


def build_face_set(
    faces_dir: str | Path, captions_file: str | Path | None, crop_size: int | None = None, crop_scale: float | None = None
) -> FaceSet:
    """Every usable (image, caption) pair; `captions_file` None trains with empty captions."""
    from tqdm import tqdm

    faces_dir = Path(faces_dir)
    rows, summary = read_index(faces_dir)
    size = int(summary.get("crop_size") or crop_size or 0)
    scale = float(summary.get("crop_scale") or crop_scale or 1.0)
    captions = read_captions(captions_file) if captions_file is not None else None
    skips = caption_skips(captions_file) if captions_file is not None else {}
    images, texts, skipped = [], [], []
    for row in tqdm(rows, desc="check faces", unit="img", leave=False):
        rel = row["image"]
        if captions is not None and rel not in captions:
            skipped.append({"image": rel, "reason": skips.get(rel, "no caption: not in the captions file")})
            continue
        img = load_rgb(faces_dir / rel)
        if img is None:
            skipped.append({"image": rel, "reason": "unreadable: not a decodable image"})
            continue
        size = size or img.shape[0]
        if img.shape[:2] != (size, size):
            skipped.append({"image": rel, "reason": f"wrong size: {img.shape[1]}x{img.shape[0]}, expected {size}x{size}"})
            continue
        images.append(rel)
        texts.append(captions[rel] if captions is not None else "")
    if not images:
        raise InputError(faces_dir, f"no usable training face ({len(skipped)} skipped: {_reasons(skipped)})")
    if size % 8:
        raise InputError(faces_dir, f"crop size {size} is not a multiple of 8 (the VAE needs it)")
    return FaceSet(faces_dir, images, texts, size, scale, skipped)


def _reasons(skipped: list[dict]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in count_reasons(skipped).items()) or "none listed"


class FaceDataset(torch.utils.data.Dataset):
    """Item i: {"pixels": (3, S, S) float in [-1, 1], "caption": str, "index": i}."""

    def __init__(self, faces: FaceSet):
        self.faces = faces

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> dict:
        path = self.faces.root / self.faces.images[i]
        img = load_rgb(path)
        if img is None:  # checked at build time; a file changed under a running job
            raise InputError(path, "became unreadable during training")
        pixels = torch.from_numpy(img).permute(2, 0, 1).float().div(127.5).sub(1.0)
        return {"pixels": pixels, "caption": self.faces.captions[i], "index": i}


def sample_indices(n: int, seed: int, positions: np.ndarray) -> np.ndarray:
    """Dataset index at each global sample position: epoch e is a permutation seeded by (seed, e)."""
    positions = np.asarray(positions, dtype=np.int64)
    out = np.empty_like(positions)
    for epoch in np.unique(positions // n):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n)
        sel = positions // n == epoch
        out[sel] = perm[positions[sel] % n]
    return out


class StepBatchSampler(torch.utils.data.Sampler):
    """Micro-batches from micro-step `start` on; this process's slice of each global batch."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise InputError("params.yaml", f"batch_size {batch_size} is not divisible by the {world} processes")
        self.n, self.batch, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.per = batch_size // world
        self.rank = rank

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self):
        for micro in range(self.start, self.total):
            pos = micro * self.batch + self.rank * self.per + np.arange(self.per)
            yield sample_indices(self.n, self.seed, pos).tolist()


def collate(items: list[dict]) -> dict:
    return {
        "pixels": torch.stack([it["pixels"] for it in items]),
        "caption": [it["caption"] for it in items],
        "index": torch.tensor([it["index"] for it in items]),
    }
