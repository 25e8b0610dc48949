"""Resumable work of one edit job: kill it at any moment, run the same command again, get the same bytes.

The work folder sits beside the output (`.OUTPUT.ipfacediff-work/`, same filesystem, so finished
files move into place atomically) and belongs to one fingerprint of everything that determines the
result (input bytes, prompt, settings, models): a different command starts it afresh. Each unit of
work is one file written atomically (temporary name, then rename), so a file that exists is complete
and a half-written one is never taken as done:

    track.npz                      face track (tracking)
    crops/NNNNNN.png               aligned face crops
    masks/NNNNNN.png               per-frame paste-back masks (16-bit; face.mask.write_mask)
    inversion.safetensors          DDIM inversion (reused when its metadata matches)
    edit_step.pt                   denoising state after the last completed step (latents, generator
                                   state, keyframes): the edit resumes at the next step
    edit_latents.pt                final latents (the edit is done)
    frames/NNNNNN.png              decoded, pasted edited frames, a whole VAE batch at a time
    output.* / output.json         the encoded result, moved onto OUTPUT when complete

The folder is removed once the output is in place.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np

from ..fsio import atomic_path

FINGERPRINT_FILE = "fingerprint.json"


def work_dir_for(output: str | Path) -> Path:
    output = Path(output)
    return output.parent / f".{output.name}.ipfacediff-work"


def fingerprint(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


class WorkDir:
    def __init__(self, output: str | Path, facts: dict):
        self.path = work_dir_for(output)
        self.key = fingerprint(facts)
        marker = self.path / FINGERPRINT_FILE
        if self.path.exists() and not (marker.is_file() and json.loads(marker.read_text() or "{}").get("key") == self.key):
            shutil.rmtree(self.path)  # another command's (or an unreadable) state: start afresh
        self.resumed = marker.is_file()
        # folders this run creates above the work folder: removed again if it ends with nothing
        self.created = [q for q in reversed(self.path.parents) if not q.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.resumed:
            with atomic_path(marker) as tmp:
                tmp.write_text(json.dumps({"key": self.key, "facts": facts}, sort_keys=True, default=str))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def remove(self) -> None:
        """Delete the work folder, and the output's folders this run created if they are empty."""
        shutil.rmtree(self.path, ignore_errors=True)
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:  # holds the output (or anything else): keep
                break


# --------------------------------------------------------------------------- units


def save_torch(path: Path, obj) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: Path):
    """The object saved at `path`, or None when absent or unreadable (then the unit is redone)."""
    import torch

    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError):  # unreadable: redo the unit
        return None


def write_png_atomic(path: Path, rgb: np.ndarray) -> None:
    """A PNG that either exists complete or not at all."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def read_png(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"{path}: unreadable PNG")
    return np.ascontiguousarray(img[:, :, ::-1])


def edit_with_checkpoints(pipe, work: WorkDir, prompt: str, inversion, seed: int, method: str):
    """(latents, info) of `pipe`'s edit, every denoising step checkpointed in `work` (latents,
    generator state, keyframes so far) through the pipeline's `callback_on_step_end`; a rerun
    continues after the last completed step (`resume=`) and gives the same latents bit for bit."""
    import torch

    done = load_torch(work / "edit_latents.pt")
    if done is not None:
        return done["latents"], done["info"]
    resume = load_torch(work / "edit_step.pt")

    def checkpoint(_pipe, step, timestep, state):
        save_torch(work / "edit_step.pt", state)

    out = pipe(prompt, inversion, generator=torch.Generator().manual_seed(seed), method=method, output_type="latent",
               callback_on_step_end=checkpoint, resume=resume)
    info = json.loads(json.dumps(out.info, default=str))  # plain types: loadable with weights_only
    save_torch(work / "edit_latents.pt", {"latents": out.latents, "info": info})
    return out.latents, info
