"""CLIP scores of an edit, where CLIP weights exist (a transformers CLIP folder, e.g. models/clip/).

- Text-frame CLIP score (CLIPScore as torchmetrics defines it): 100 * max(cos(E_I(frame), E_T(target)), 0),
  averaged over the edited frames.
- Directional CLIP score (StyleGAN-NADA's direction, as the paper's eq. 6 loss): cos(E_I(edit_t) -
  E_I(orig_t), E_T(target) - E_T(reference)) averaged over frames paired by time with the original.
The CLIP folder's ipfacediff.json says whether its weights are random (the sample profile's tiny
CLIP): then `weights` is "random" and the scores measure nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .clips import Clip, pair_by_time


class ClipScorer:
    def __init__(self, clip_dir: str | Path, device: str = "cpu", batch: int = 16):
        from ..diffusion.clip_model import load_clip_model

        self.clip = load_clip_model(clip_dir, device=device)
        self.device, self.batch = device, batch
        self.weights = str(self.clip.info.get("weights", "pretrained"))
        self.description = f"CLIP at {clip_dir} ({self.weights} weights" + (
            f", {self.clip.info['spec']}" if self.clip.info.get("spec") else "") + ")"
        self._text: dict[str, np.ndarray] = {}
        self._frames: dict[str, np.ndarray] = {}  # originals recur once per edit: embed them once

    def images(self, frames: np.ndarray) -> np.ndarray:
        """Unit CLIP image embeddings (N, P) of uint8 RGB frames."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(frames), self.batch):
                x = torch.from_numpy(np.ascontiguousarray(frames[i:i + self.batch])).permute(0, 3, 1, 2)
                out.append(self.clip.image_embeds(x.float().div(127.5).sub(1).to(self.device)).float().cpu().numpy())
        e = np.concatenate(out).astype(np.float64)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def clip_images(self, clip: Clip) -> np.ndarray:
        if clip.key not in self._frames:
            self._frames[clip.key] = self.images(clip.frames)
        return self._frames[clip.key]

    def text(self, prompt: str) -> np.ndarray:
        import torch

        if prompt not in self._text:
            with torch.inference_mode():
                t = self.clip.text_embeds([prompt]).float().cpu().numpy()[0].astype(np.float64)
            self._text[prompt] = t / np.linalg.norm(t)
        return self._text[prompt]

    def score(self, original: Clip, edited: Clip, target: str, reference: str) -> dict:
        e_edit = self.images(edited.frames)
        text_frame = 100.0 * np.maximum(e_edit @ self.text(target), 0.0)
        pairing = pair_by_time(original, edited)
        i_edit = pairing.edit_index
        e_src = self.clip_images(original)[pairing.source_index[i_edit]]
        d_img = e_edit[i_edit] - e_src
        d_txt = self.text(target) - self.text(reference)
        norms = np.linalg.norm(d_img, axis=1) * np.linalg.norm(d_txt)
        # an unchanged frame has no direction: it scores 0 rather than NaN
        directional = np.where(norms > 1e-12, d_img @ d_txt / np.maximum(norms, 1e-12), 0.0)
        return {"clip_score": float(text_frame.mean()), "directional_clip": float(directional.mean()),
                "frames": len(edited), "frames_paired": int(len(i_edit)), "clip_weights": self.weights}
