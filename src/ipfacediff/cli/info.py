"""`ipfacediff info VIDEO`: exact stream facts and faces found on a few sampled frames."""

from __future__ import annotations

import json

import numpy as np


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="video facts (exact fps, frames, size, audio, rotation) and faces")
    p.add_argument("video", help="video file (anything FFmpeg reads)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--face-index", type=int, default=0, help="which face to describe: 0 = largest (default)")
    p.add_argument("--samples", type=int, default=5, help="frames sampled (evenly) for face detection")
    p.set_defaults(func=run)


def sample_faces(path, n_frames: int, n_samples: int, face_index: int = 0) -> dict:
    """Faces per evenly spaced sampled frame and the selected face's box on each."""
    from ..face import detect_faces, select_face
    from ..video import iter_frames

    want = set(np.linspace(0, n_frames - 1, num=min(n_samples, n_frames)).round().astype(int).tolist())
    counts, boxes, per_frame = [], [], []
    for i, frame in enumerate(iter_frames(path, max_frames=max(want) + 1)):
        if i in want:
            faces = detect_faces(frame)
            counts.append(len(faces))
            face = select_face(faces, face_index)
            boxes.append(None if face is None else _box(face))
            # index k = the k-th largest, exactly what --face-index k selects
            per_frame.append([{"index": k, "box": _box(f), "size_px": round(f.size, 1), "score": round(f.score, 3)}
                              for k, f in enumerate(sorted(faces, key=lambda f: -f.area))])
    return {
        "sampled_frames": sorted(want), "faces_per_frame": counts,
        "faces": int(np.median(counts)) if counts else 0,  # typical count, robust to one missed frame
        "selected_face_index": face_index, "selected_boxes": boxes, "faces_by_frame": per_frame,
    }


def _box(face) -> list[float]:
    return [round(float(v), 1) for v in face.box]


def face_lines(result: dict) -> list[str]:
    """One line per face index: its median box and size over the sampled frames where it appears."""
    lines = []
    n = max(result["faces_per_frame"], default=0)
    for k in range(n):
        seen = [faces[k] for faces in result["faces_by_frame"] if len(faces) > k]
        box = np.median([f["box"] for f in seen], axis=0)
        size = float(np.median([f["size_px"] for f in seen]))
        lines.append(f"  #{k}: box x {box[0]:.0f}-{box[2]:.0f}, y {box[1]:.0f}-{box[3]:.0f}, {size:.0f} px "
                     f"(in {len(seen)}/{len(result['faces_by_frame'])} sampled frames)")
    return lines


def run(args) -> int:
    from ..errors import InputError
    from ..face import DETECTOR_NAME
    from ..video import probe

    if args.face_index < 0:
        raise InputError(None, f"--face-index must be >= 0, got {args.face_index}")
    info = probe(args.video)
    result = info.to_dict() | sample_faces(args.video, info.n_frames, max(1, args.samples), args.face_index)
    result["detector"] = DETECTOR_NAME
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    sel = [b is not None for b in result["selected_boxes"]]
    lines = [
        f"file:      {info.path}",
        f"fps:       {info.fps_str}" + (" (variable frame rate)" if info.vfr else ""),
        f"frames:    {info.n_frames}" + (f" (container declares {info.n_frames_declared})"
                                          if info.n_frames_declared and info.n_frames_declared != info.n_frames else ""),
        f"size:      {info.width}x{info.height}",
        f"duration:  {info.duration_s:.3f} s",
        f"audio:     {'yes (' + str(info.audio_codec) + ')' if info.has_audio else 'no'}",
        f"rotation:  {info.rotation} deg (applied on read)",
        f"codec:     {info.codec}",
        f"faces:     {result['faces']} (per sampled frame {result['faces_per_frame']} at frames {result['sampled_frames']})",
        *face_lines(result),
        f"face #{args.face_index}:   found in {sum(sel)}/{len(sel)} sampled frames (choose with edit --face-index)",
        f"detector:  {DETECTOR_NAME}",
    ]
    print("\n".join(lines))
    return 0
