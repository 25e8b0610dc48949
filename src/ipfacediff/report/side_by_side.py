"""Side-by-side videos: original | each method, per evaluation clip and prompt, labelled panels.

Frames follow the original's timeline; each method's panel shows its frame nearest in time (the
metrics' pairing rule), black where the edit has no frame at that time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics.clips import Clip, pair_by_time

LABEL_PX = 18


def _panel(frame: np.ndarray | None, height: int, width: int) -> np.ndarray:
    import cv2

    if frame is None:
        return np.zeros((height, width, 3), np.uint8)
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if frame.shape[0] > height else cv2.INTER_CUBIC)


def _label(text: str, width: int) -> np.ndarray:
    import cv2

    strip = np.full((LABEL_PX, width, 3), 32, np.uint8)
    scale = min(0.45, 0.9 * width / max(1, 9 * len(text)))
    cv2.putText(strip, text, (3, LABEL_PX - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def compose(original: Clip, edits: dict[str, Clip], height: int = 128) -> np.ndarray:
    """(N, LABEL_PX + height, (1 + len(edits)) * width, 3) frames on the original's timeline."""
    h0, w0 = original.frames.shape[1:3]
    width = int(round(w0 * height / h0)) // 2 * 2 or 2
    # pair_by_time pairs each frame of its 2nd clip to the 1st: here the original is the 2nd
    index = {name: pair_by_time(clip, original).source_index for name, clip in edits.items()}
    header = np.concatenate([_label("original", width)] + [_label(n, width) for n in edits], axis=1)
    out = []
    for i, frame in enumerate(original.frames):
        panels = [_panel(frame, height, width)]
        for name, clip in edits.items():
            j = index[name][i]
            panels.append(_panel(clip.frames[j] if j >= 0 else None, height, width))
        out.append(np.concatenate([header, np.concatenate(panels, axis=1)], axis=0))
    return np.stack(out)


def write_side_by_side(path: str | Path, original: Clip, edits: dict[str, Clip], height: int = 128) -> Path:
    from ..video import write_video

    frames = compose(original, edits, height)
    write_video(path, frames, original.fps or 10)
    return Path(path)
