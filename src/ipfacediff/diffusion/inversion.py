"""DDIM inversion of every frame with the identity branch, cached per video.

Cache file (one per video, safetensors): tensors `latents_<i>`, i = 0..N, each (frames, 4, h, w).
`latents_i` is the state sampling step i starts from (at timestep `timesteps[i]`, sampling order), so
`latents_0` is x_T and `latents_N` is x_0 (the clean VAE latent, after the last sampling step).
The header's `__metadata__["ipfacediff"]` holds a JSON record (model and branch hashes, steps,
timesteps, sizes, frame count and hash, prompt) and `__metadata__["data_sha256"]` the hash of the tensor
bytes, so a corrupt or stale entry is detected and recomputed.

The file is written frame-batch by frame-batch into a preallocated standard safetensors layout: memory
is bounded by one batch whatever the video length, and readers fetch step i for a subset of frames
with `safe_open(...).get_slice` without loading the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..layout import crops_dir, inversion_path, prepped_videos
from ..settings import InvertSettings
from ..fsio import atomic_path
from .branches import BranchSet, branch_mode
from .models import Components, encode_images, encode_prompt, uint8_to_tensor, weight_hashes

log = logging.getLogger(__name__)

FORMAT = "ipfacediff-inversion-1"
_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


InvertConfig = InvertSettings  # params `invert` (settings.py)




# --------------------------------------------------------------------------- the DDIM update


def ddim_step(x: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """Move `x` from cumulative alpha `alpha_from` to `alpha_to` along the predicted noise (DDIM, eta 0).

    Sampling goes to a larger alpha, inversion to a smaller one; the update is the same.
    """
    a_from, a_to = torch.as_tensor(alpha_from, dtype=torch.float64), torch.as_tensor(alpha_to, dtype=torch.float64)
    x0 = (x - (1 - a_from).sqrt().to(x.dtype) * eps) / a_from.sqrt().to(x.dtype)
    return a_to.sqrt().to(x.dtype) * x0 + (1 - a_to).sqrt().to(x.dtype) * eps


def ddim_schedule(scheduler, steps: int) -> tuple[list[int], list[float]]:
    """Sampling timesteps t_0 > ... > t_{N-1} and the N+1 cumulative alphas of the states between them.

    alphas[i] is the noise level of `latents_i` (alphas[N]: the scheduler's final alpha, x_0).
    """
    if steps < 1:
        raise InputError("params.yaml", f"invert.steps must be >= 1, got {steps}")
    scheduler.set_timesteps(steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    acp = scheduler.alphas_cumprod
    alphas = [float(acp[t]) for t in timesteps] + [float(scheduler.final_alpha_cumprod)]
    return timesteps, alphas


def _eps(unet, x: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
    out = unet(x.to(unet.dtype), torch.full((x.shape[0],), t, device=x.device), encoder_hidden_states=cond.expand(x.shape[0], -1, -1))
    return out.sample.float()


@torch.no_grad()
def invert_latents(unet, x0: torch.Tensor, cond: torch.Tensor, timesteps: Sequence[int], alphas: Sequence[float]) -> list[torch.Tensor]:
    """[latents_0 .. latents_N] from clean latents x0 (float32), noise predicted at the current state."""
    states = [x0.float()]
    x = states[0]
    for i in reversed(range(len(timesteps))):
        x = ddim_step(x, _eps(unet, x, timesteps[i], cond), alphas[i + 1], alphas[i])
        states.append(x)
    return states[::-1]


@torch.no_grad()
def sample_latents(unet, xT: torch.Tensor, cond: torch.Tensor, timesteps: Sequence[int], alphas: Sequence[float]) -> torch.Tensor:
    """Plain DDIM sampling (no guidance, no edit) from latents_0; the inverse of `invert_latents`."""
    x = xT.float()
    for i, t in enumerate(timesteps):
        x = ddim_step(x, _eps(unet, x, t, cond), alphas[i], alphas[i + 1])
    return x


# --------------------------------------------------------------------------- frames


class CropFrames:
    """The aligned crops of a prepped video (data/prepped/<vid>/crops/*.png), read lazily by slice."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.files = sorted(self.folder.glob("*.png"))
        if not self.files:
            raise InputError(self.folder, "no crop frames (*.png) found")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: slice) -> np.ndarray:
        from ..face.prep import read_image

        return np.stack([read_image(f) for f in self.files[index]])


def _batches(frames, batch_size: int) -> Iterable[tuple[int, np.ndarray]]:
    for start in range(0, len(frames), batch_size):
        yield start, np.asarray(frames[start : start + batch_size])


def frames_digest(frames, batch_size: int = 64) -> tuple[str, tuple[int, int]]:
    """sha256 of the frames' uint8 bytes (with shapes), and the frame size (H, W)."""
    h = hashlib.sha256()
    size = None
    for _, batch in _batches(frames, batch_size):
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {batch.shape} {batch.dtype}")
        if size is None:
            size = batch.shape[1:3]
        elif batch.shape[1:3] != size:
            raise ValueError(f"frames change size: {size} then {batch.shape[1:3]}")
        h.update(str(batch.shape).encode())
        h.update(np.ascontiguousarray(batch).tobytes())
    if size is None:
        raise ValueError("no frames")
    return h.hexdigest(), (int(size[0]), int(size[1]))


# --------------------------------------------------------------------------- the cache file


class _SafetensorsWriter:
    """Writes a standard safetensors file whose layout is fixed up front; tensors filled by row ranges.

    The header is rewritten at `close` with the sha256 of the data bytes (fixed-length field, so the
    layout does not move).
    """

    def __init__(self, path: Path, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, metadata: dict[str, str]):
        self.path, self.shapes, self.dtype, self.metadata = path, shapes, dtype, dict(metadata)
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.offsets, pos = {}, 0
        for name, shape in shapes.items():
            nbytes = int(np.prod(shape)) * itemsize
            self.offsets[name] = (pos, pos + nbytes, nbytes // shape[0])
            pos += nbytes
        self.data_len = pos
        self.metadata["data_sha256"] = "0" * 64
        self.header_len = len(self._header())
        self.f = open(path, "wb")
        self.f.truncate(8 + self.header_len + self.data_len)

    def _header(self) -> bytes:
        st = _ST_DTYPES[self.dtype]
        head: dict[str, Any] = {"__metadata__": self.metadata}
        for name, shape in self.shapes.items():
            head[name] = {"dtype": st, "shape": list(shape), "data_offsets": list(self.offsets[name][:2])}
        raw = json.dumps(head, separators=(",", ":")).encode()
        return raw + b" " * (-len(raw) % 8)  # safetensors allows trailing spaces; keeps data aligned

    def write_rows(self, name: str, start: int, tensor: torch.Tensor) -> None:
        begin, _, row = self.offsets[name]
        data = tensor.detach().to("cpu", self.dtype).contiguous()
        self.f.seek(8 + self.header_len + begin + start * row)
        self.f.write(data.view(torch.uint8).numpy().tobytes())

    def close(self) -> None:
        self.f.flush()
        self.metadata["data_sha256"] = _data_sha256(self.f.name, 8 + self.header_len, self.data_len)
        header = self._header()
        assert len(header) == self.header_len
        self.f.seek(0)
        self.f.write(struct.pack("<Q", self.header_len) + header)
        self.f.close()


def _data_sha256(path: str | Path, offset: int, length: int, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left > 0:
            block = f.read(min(chunk, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


class InversionCache:
    """Read access to one video's inverted latents: `latents(step_index, frames=...)`."""

    def __init__(self, path: str | Path):
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "inversion cache not found (run the invert stage)")
        try:
            self._file = safe_open(str(self.path), framework="pt")
            raw = self._file.metadata() or {}
            self.meta: dict = json.loads(raw["ipfacediff"])
            self.data_sha256 = raw["data_sha256"]
        except Exception as e:  # truncated, not safetensors, foreign file
            raise InputError(self.path, f"corrupt inversion cache ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
        if self.meta.get("format") != FORMAT:
            raise InputError(self.path, f"unknown inversion cache format {self.meta.get('format')!r}")
        names = set(self._file.keys())
        expected = {f"latents_{i}" for i in range(self.steps + 1)}
        if names != expected:
            raise InputError(self.path, f"corrupt inversion cache (tensors {sorted(names ^ expected)[:3]} unexpected or missing)")

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])

    @property
    def timesteps(self) -> list[int]:
        """Sampling timesteps, in sampling order; `latents(i)` is the state at `timesteps[i]`."""
        return list(self.meta["timesteps"])

    @property
    def alphas(self) -> list[float]:
        return list(self.meta["alphas"])

    @property
    def n_frames(self) -> int:
        return int(self.meta["n_frames"])

    @property
    def prompt(self) -> str:
        return str(self.meta["prompt"])

    def latents(self, step_index: int, frames: slice | Sequence[int] | None = None) -> torch.Tensor:
        """(k, 4, h, w) float32 state `latents_<step_index>` for `frames` (all when None); reads only those rows."""
        if not 0 <= step_index <= self.steps:
            raise IndexError(f"step_index {step_index} outside 0..{self.steps}")
        sl = self._file.get_slice(f"latents_{step_index}")
        if frames is None:
            frames = slice(0, self.n_frames)
        if isinstance(frames, slice):
            return sl[frames].float()
        idx = [int(i) for i in frames]
        if any(not 0 <= i < self.n_frames for i in idx):
            raise IndexError(f"frame index outside 0..{self.n_frames - 1}")
        runs, start = [], 0
        for k in range(1, len(idx) + 1):  # contiguous runs read as one slice each
            if k == len(idx) or idx[k] != idx[k - 1] + 1:
                runs.append(sl[idx[start] : idx[k - 1] + 1])
                start = k
        return torch.cat(runs).float() if runs else torch.empty(0)

    def x0(self, frames=None) -> torch.Tensor:
        return self.latents(self.steps, frames)

    def verify(self) -> bool:
        """Recompute the data hash (deep check against bit rot or partial writes)."""
        with self.path.open("rb") as f:
            offset = 8 + struct.unpack("<Q", f.read(8))[0]
        return _data_sha256(self.path, offset, self.path.stat().st_size - offset) == self.data_sha256


# --------------------------------------------------------------------------- inverting a video


def branch_fingerprint(branches: BranchSet, name: str) -> str:
    """What serves branch `name` (source and weight hash), for cache keys: 'base', 'lora:<sha>'..."""
    source = branches.sources.get(name, "base")
    kind, _, path = source.partition(":")
    if not path or branch_mode(path) is None:
        return "base"
    return f"{kind}:{weight_hashes(path)['combined']}"


def inversion_meta(components: Components, branches: BranchSet, prompt: str, steps: int, frames_sha: str, n_frames: int, size: tuple[int, int], store_dtype: str) -> dict:
    timesteps, alphas = ddim_schedule(components.new_scheduler(), steps)
    s = components.vae_scale
    return {
        "format": FORMAT,
        "model_sha256": components.model_hash,
        "model_source": components.info.get("source"),
        "branch": branch_fingerprint(branches, "identity"),
        "steps": steps,
        "timesteps": timesteps,
        "alphas": alphas,
        "prompt": prompt,
        "n_frames": n_frames,
        "frames_sha256": frames_sha,
        "size": list(size),
        "latent_shape": [4, size[0] // s, size[1] // s],
        "store_dtype": store_dtype,
        "model_dtype": str(components.dtype).removeprefix("torch."),
    }


def cache_is_valid(path: str | Path, expected: dict, deep: bool = True) -> bool:
    """True when `path` holds a complete, uncorrupted inversion with exactly the `expected` metadata."""
    try:
        cache = InversionCache(path)
    except InputError as e:
        if Path(path).exists():
            log.warning("%s; recomputing", e)
        return False
    if cache.meta != json.loads(json.dumps(expected)):
        diff = sorted(k for k in set(cache.meta) | set(expected) if cache.meta.get(k) != json.loads(json.dumps(expected.get(k))))
        log.warning("%s: stale inversion (%s differ); recomputing", path, ", ".join(diff))
        return False
    if deep and not cache.verify():
        log.warning("%s: inversion data hash mismatch (corrupt); recomputing", path)
        return False
    return True


def invert_video(
    components: Components,
    branches: BranchSet,
    frames,
    path: str | Path,
    prompt: str = "",
    steps: int = 50,
    batch_size: int = 8,
    store_dtype: str = "float32",
    progress: bool = True,
) -> Path:
    """DDIM-invert every frame with the identity branch into the cache file `path`; reuse a valid one.

    `frames`: (N, H, W, 3) uint8 array or a lazily sliced sequence of them (e.g. `CropFrames`).
    Deterministic: VAE posterior means, eta 0, no guidance.
    """
    from .models import resolve_dtype

    path = Path(path)
    frames_sha, size = frames_digest(frames, max(batch_size, 16))
    s = components.vae_scale
    if size[0] % s or size[1] % s:
        raise InputError(path, f"frame size {size[1]}x{size[0]} is not a multiple of {s}")
    meta = inversion_meta(components, branches, prompt, steps, frames_sha, len(frames), size, store_dtype)
    if cache_is_valid(path, meta):
        log.info("%s: reusing inversion", path)
        return path
    timesteps, alphas = meta["timesteps"], meta["alphas"]
    cond = encode_prompt(components, [prompt])
    shapes = {f"latents_{i}": (len(frames), *meta["latent_shape"]) for i in range(steps + 1)}
    n_batches = -(-len(frames) // batch_size)
    bar = tqdm(total=n_batches * steps, desc=f"invert {path.stem}", unit="step", disable=not progress)
    with atomic_path(path) as tmp:
        writer = _SafetensorsWriter(tmp, shapes, resolve_dtype(store_dtype), {"ipfacediff": json.dumps(meta)})
        try:
            with branches.use("identity") as unet:
                for start, batch in _batches(frames, batch_size):
                    x0 = encode_images(components, uint8_to_tensor(batch).to(components.device), batch_size)
                    for i, state in enumerate(invert_latents(unet, x0, cond, timesteps, alphas)):
                        writer.write_rows(f"latents_{i}", start, state)
                    bar.update(steps)
        except BaseException:
            writer.f.close()  # atomic_path removes the partial file
            raise
        finally:
            bar.close()
        writer.close()
    return path


# --------------------------------------------------------------------------- captions and the stage


def video_prompts(captions_file: str | Path, videos: Sequence[str], fixed: str = "") -> dict[str, tuple[str, str]]:
    """Per video (prompt, where it came from): `fixed` if set, else its caption, else the empty prompt."""
    if fixed:
        return {v: (fixed, "params invert.prompt") for v in videos}
    captions: dict[str, str] = {}
    captions_file = Path(captions_file)
    if captions_file.is_file():
        for n, line in enumerate(captions_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                captions[str(rec["video"])] = str(rec["caption"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise InputError(captions_file, f"line {n}: expected {{\"video\", \"caption\", ...}} JSON ({e})") from e
    out = {}
    for v in videos:
        if v in captions:
            out[v] = (captions[v], f"caption ({captions_file})")
        else:
            out[v] = ("", "empty (no caption file)" if not captions_file.is_file() else "empty (video not captioned)")
    return out


def invert_all(
    components: Components,
    branches: BranchSet,
    prepped: str | Path,
    out_dir: str | Path,
    cfg: InvertConfig,
    captions_file: str | Path,
) -> dict[str, dict]:
    """Invert every prepped video into out_dir/<vid>.safetensors; reuse valid ones, drop stale extras."""
    prepped, out_dir = Path(prepped), Path(out_dir)
    videos = prepped_videos(prepped)
    prompts = video_prompts(captions_file, videos, cfg.prompt)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    for vid in videos:
        prompt, source = prompts[vid]
        path = invert_video(components, branches, CropFrames(crops_dir(prepped, vid)), inversion_path(out_dir, vid), prompt, cfg.steps, cfg.batch_size, cfg.store_dtype)
        cache = InversionCache(path)
        summary[vid] = {"file": path.name, "prompt": prompt, "prompt_source": source, "n_frames": cache.n_frames, "steps": cache.steps}
    for stale in out_dir.glob("*.safetensors"):  # videos no longer in data/prepped
        if stale.stem not in summary:
            os.remove(stale)
    return summary
