"""`ipfacediff metrics identity|temporal|recognizers`: the evaluation metrics on any pair of videos."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("metrics", help="identity / temporal metrics of an edited video")
    sub = p.add_subparsers(dest="metrics_command", required=True)

    ident = sub.add_parser("identity", help="identity preservation: cosine distance, R@1/MRR, TL-ID/TG-ID")
    ident.add_argument("--original", required=True, help="original clip: video file, prepped folder or frame folder")
    ident.add_argument("--edited", required=True, help="edited clip (same forms); frames are paired by timestamp")
    ident.add_argument("--gallery", action="append", default=[], metavar="DIR_OR_LIST",
                       help="retrieval gallery: folder of clips or .txt list of clip paths (repeatable); "
                            "the original is added when the gallery lacks its id")
    ident.add_argument("--gallery-cache", metavar="DIR", help="keep <recogniser>.npz gallery indexes here")
    ident.add_argument("--recognizer", action="append", metavar="NAME",
                       help="recogniser(s) (repeatable; default sface, dlib, facenet)")
    ident.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                       help="weight file for a recogniser, e.g. vggface=~/vgg_face_weights.h5")
    ident.add_argument("--json", action="store_true", help="print one JSON object")
    ident.set_defaults(func=run_identity)

    temp = sub.add_parser("temporal", help="warp error E_warp (x1000, RGB in [0, 1]) over consecutive frames")
    temp.add_argument("video", help="video file or frame folder")
    temp.add_argument("--source", help="original clip: take the optical flow from it (the protocol for edits)")
    temp.add_argument("--flow", choices=["dis", "raft", "auto"], default="dis",
                      help="optical flow (default dis; auto: RAFT when its weights are found, else DIS)")
    temp.add_argument("--raft-weights", metavar="PATH", help="torchvision RAFT state dict (for --flow raft)")
    temp.add_argument("--json", action="store_true", help="print one JSON object")
    temp.set_defaults(func=run_temporal)

    rec = sub.add_parser("recognizers", help="list the face recognisers and whether their weights load here")
    rec.add_argument("--json", action="store_true")
    rec.set_defaults(func=run_recognizers)


def _weights(specs: list[str]) -> dict[str, str]:
    from ..errors import InputError

    out = {}
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise InputError(None, f"--weights expects NAME=PATH, got {s!r}")
        out[name] = path
    return out


def run_identity(args) -> int:
    from pathlib import Path

    from ..metrics.clips import load_frame_clip
    from ..metrics.evaluate import finite
    from ..metrics.identity import Embedder, build_gallery, compare, gallery_entries, rank_in_gallery
    from ..recognition import get_recognizer

    names = args.recognizer or ["sface", "dlib", "facenet"]
    weights = _weights(args.weights)
    original, edited = load_frame_clip(args.original), load_frame_clip(args.edited)
    entries, dropped = gallery_entries(args.gallery) if args.gallery else ([], [])
    recs = [get_recognizer(n, weights.get(n)) for n in names]  # fail on absent weights before any work
    embedder = Embedder()
    out = {"original": original.path, "edited": edited.path, "recognizers": {}}
    for rec in recs:
        res = compare(rec, embedder, original, edited)
        row = {k: (finite(v) if isinstance(v, float) else v) for k, v in res.summary().items()}
        if args.gallery:
            cache = Path(args.gallery_cache) / f"{rec.name}.npz" if args.gallery_cache else None
            gallery = build_gallery(entries, rec, embedder, cache)
            (rank,), size = rank_in_gallery(gallery, original.name, embedder.video(rec, original),
                                            [embedder.video(rec, edited)])
            row |= {"rank": rank, "gallery_size": size, "r_at_1": float(rank == 1) if rank else 0.0,
                    "mrr": 1.0 / rank if rank else 0.0, "original_added_to_gallery": original.name not in gallery.ids,
                    "gallery_skipped": len(gallery.skipped), "gallery_duplicates_dropped": len(dropped)}
        out["recognizers"][rec.name] = row | {"network": rec.network, "weights_sha256": rec.weights_sha256}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"original {original.path} ({len(original)} frames) vs edited {edited.path} ({len(edited)} frames)")
    for name, r in out["recognizers"].items():
        line = (f"{name:>16}: cosine distance {_f(r['cosine_distance'])}  TL-ID {_f(r['tl_id'])}  TG-ID {_f(r['tg_id'])}"
                f"  frames compared {r['frames_compared']}, no face {r['frames_no_face_original']}/"
                f"{r['frames_no_face_edited']} (orig/edit), unpaired {r['frames_unpaired']}")
        if "r_at_1" in r:  # gallery given (r["rank"] itself is present, None, without one)
            line += f"  rank {r['rank']} of {r['gallery_size']} (R@1 {r['r_at_1']:.0f}, RR {r['mrr']:.3f})"
        print(line)
    return 0


def run_temporal(args) -> int:
    from ..metrics.clips import load_frame_clip
    from ..metrics.evaluate import paired_frames
    from ..metrics.temporal import WARP_SCALE, flow_estimator, warp_error

    video = load_frame_clip(args.video)
    flow = flow_estimator(args.flow, args.raft_weights)
    if args.source:
        frames, source, unpaired = paired_frames(load_frame_clip(args.source), video)
    else:
        frames, source, unpaired = video.frames, None, 0
    res = warp_error(frames, flow, source=source, progress=sys.stderr.isatty())
    out = {"video": video.path, "source": args.source, "frames_unpaired": unpaired, "scale": f"E_warp x {WARP_SCALE:g}",
           "per_pair": res.per_pair} | res.summary()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{video.path}: E_warp {_f(res.warp_error)} (x{WARP_SCALE:g}, RGB in [0, 1]) over {res.pairs} frame pairs, "
              f"{res.kept_fraction:.1%} pixels non-occluded; flow: {res.flow}"
              + (f"; {unpaired} frames unpaired with the source" if unpaired else ""))
    return 0


def run_recognizers(args) -> int:
    from ..recognition import BACKENDS, available, backend_class

    status = available()
    rows = {n: {"status": s, "input_size": backend_class(n).input_size, "packaged": BACKENDS[n][2]} for n, s in status.items()}
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for n, r in rows.items():
            print(f"{n:>16} ({r['input_size']}px, {'packaged' if r['packaged'] else 'user weights'}): {r['status']}")
    return 0


def _f(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.4f}"
