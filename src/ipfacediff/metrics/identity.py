"""Identity preservation of an edit (paper Table 1 + STIT's TL-ID/TG-ID), per recogniser.

Per frame: YuNet landmarks (once per clip), then each recogniser aligns them to its own template
and embeds. Frames without a face are excluded from every average and counted in the output
(`frames_no_face`); an edited video with no face in any frame gets NaN distances and counts as a
retrieval miss (reciprocal rank 0). See `retrieval` for the embedding / tie conventions and
`clips.pair_by_time` for how frames of clips of different length or fps are paired.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsio import atomic_path
from ..media import CELEBV_HQ_INFO, IMAGE_SUFFIXES, VIDEO_SUFFIXES, celebv_hq_clips
from ..recognition import Recognizer
from .clips import Clip, Faces, detect_landmarks, load_frame_clip, pair_by_time
from .retrieval import cosine_distance, relative_identity_consistency, retrieval_ranks, video_embedding
from ..layout import META, is_prepped_video

log = logging.getLogger(__name__)


class Embedder:
    """Landmarks once per clip, frame embeddings once per (recogniser, clip): (N, D), NaN rows where
    the frame has no face."""

    def __init__(self, progress: bool = False):
        self.progress = progress
        self._faces: dict[str, Faces] = {}
        self._emb: dict[tuple[str, str], np.ndarray] = {}

    def faces(self, clip: Clip) -> Faces:
        if clip.key not in self._faces:
            self._faces[clip.key] = detect_landmarks(clip.frames, progress=self.progress)
        return self._faces[clip.key]

    def frames(self, rec: Recognizer, clip: Clip) -> np.ndarray:
        key = (rec.name, clip.key)
        if key not in self._emb:
            faces = self.faces(clip)
            out = np.full((len(clip), rec.dim), np.nan, np.float32)
            idx = np.flatnonzero(faces.found)
            if len(idx):
                emb = rec.embed_images([clip.frames[i] for i in idx], [faces.landmarks[i] for i in idx])
                if emb.shape[1] != out.shape[1]:  # backends whose width is read from the weights
                    out = np.full((len(clip), emb.shape[1]), np.nan, np.float32)
                out[idx] = emb
            self._emb[key] = out
        return self._emb[key]

    def video(self, rec: Recognizer, clip: Clip) -> np.ndarray | None:
        """Unit video embedding, or None when no frame has a face."""
        emb = self.frames(rec, clip)
        return None if np.isnan(emb).all() else video_embedding(emb)


# ---------------------------------------------------------------------------------------- pairs
@dataclass
class PairResult:
    recognizer: str
    cosine_distance: float  # NaN when either video has no face
    tl_id: float
    tg_id: float
    frames_original: int
    frames_edited: int
    frames_no_face_original: int
    frames_no_face_edited: int
    frames_unpaired: int  # edit frames with no original frame at their time + the reverse
    frames_compared: int  # paired frames with a face in both (per-frame similarity, TL/TG-ID)
    frame_times: list[float] = field(default_factory=list)  # edit timestamps of compared frames
    frame_similarity: list[float] = field(default_factory=list)  # cos(edit frame, original frame)
    rank: int | None = None  # of the original in the gallery (None: no gallery)
    gallery_size: int | None = None

    def summary(self) -> dict:
        d = dict(self.__dict__)
        d.pop("frame_times")
        d.pop("frame_similarity")
        return d


def compare(rec: Recognizer, embedder: Embedder, original: Clip, edited: Clip) -> PairResult:
    """Cosine distance of the video embeddings, per-frame similarity and TL/TG-ID on paired frames."""
    e_src, e_edit = embedder.frames(rec, original), embedder.frames(rec, edited)
    v_src = embedder.video(rec, original)
    if v_src is None:
        raise InputError(original.path, f"no face found in any of its {len(original)} frames")
    v_edit = embedder.video(rec, edited)
    pairing = pair_by_time(original, edited)
    i_edit = pairing.edit_index
    i_src = pairing.source_index[i_edit]
    both = ~np.isnan(e_edit[i_edit]).any(1) & ~np.isnan(e_src[i_src]).any(1)
    i_edit, i_src = i_edit[both], i_src[both]
    sims = np.einsum("nd,nd->n", e_edit[i_edit].astype(np.float64), e_src[i_src].astype(np.float64))
    consistency = relative_identity_consistency(e_src[i_src], e_edit[i_edit])
    return PairResult(
        recognizer=rec.name,
        cosine_distance=float("nan") if v_edit is None else cosine_distance(v_src, v_edit),
        tl_id=consistency["tl_id"], tg_id=consistency["tg_id"],
        frames_original=len(original), frames_edited=len(edited),
        frames_no_face_original=int(np.isnan(e_src).any(1).sum()),
        frames_no_face_edited=int(np.isnan(e_edit).any(1).sum()),
        frames_unpaired=pairing.n_edit_unpaired + pairing.n_source_unpaired,
        frames_compared=int(len(i_edit)),
        frame_times=[round(float(t), 6) for t in edited.times[i_edit]],
        frame_similarity=[float(s) for s in sims],
    )


# -------------------------------------------------------------------------------------- gallery
def gallery_entries(specs: list[str | Path]) -> tuple[list[tuple[str, Path]], list[str]]:
    """(id, path) for every gallery item named by `specs` (a clip: video, image or frame folder; a
    folder of clips; or a text file listing one clip path per line, relative to the list file),
    and the paths dropped as duplicate ids: the first source naming an id wins, so with
    `[data/prepped, <CelebV-HQ folder>]` the original is the exact frames the edit started from."""
    entries: list[tuple[str, Path]] = []
    for spec in specs:
        spec = Path(spec)
        if not spec.exists():
            raise InputError(spec, "gallery source not found")
        if spec.is_file() and spec.suffix.lower() in {".txt", ".lst", ".list"}:
            lines = [s.strip() for s in spec.read_text().splitlines()]
            paths = [(spec.parent / s) for s in lines if s and not s.startswith("#")]
            for p in paths:
                if not _is_clip(p):
                    raise InputError(spec, f"lists {p}, which is not a video, image or frame folder")
            entries += [(_clip_id(p), p) for p in paths]
        elif _is_clip(spec):
            entries.append((_clip_id(spec), spec))
        elif spec.is_dir() and (spec / CELEBV_HQ_INFO).is_file():  # a CelebV-HQ release: its clips, wherever they sit
            entries += list(celebv_hq_clips(spec).items())
        elif spec.is_dir():
            entries += [(_clip_id(p), p) for p in sorted(spec.iterdir()) if _is_clip(p)]
        else:
            raise InputError(spec, "not a clip, a folder of clips or a .txt list of clips")
    seen: dict[str, Path] = {}
    dropped = []
    for cid, p in entries:
        if cid in seen:
            if seen[cid] != p:
                dropped.append(str(p))
            continue
        seen[cid] = p
    return list(seen.items()), dropped


def _clip_id(p: Path) -> str:
    return p.name if p.is_dir() else p.stem


def _is_clip(p: Path) -> bool:
    if p.is_file():
        return p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES
    if p.is_dir():
        return is_prepped_video(p) or ((p / META).is_file() and any(
            q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir()))
    return False


def _fingerprint(p: Path) -> str:
    """Cheap change detector for a gallery item: sizes and mtimes of its files."""
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return ";".join(f"{q.relative_to(p.parent)}:{q.stat().st_size}:{q.stat().st_mtime_ns}" for q in files)


@dataclass
class Gallery:
    recognizer: str
    weights_sha256: str
    ids: list[str]
    embeddings: np.ndarray  # (G, D) float32 unit rows
    skipped: list[dict] = field(default_factory=list)  # entries without a face in any frame
    reused: int = 0  # entries taken from the cache file

    def __len__(self) -> int:
        return len(self.ids)

    def with_entry(self, cid: str, emb: np.ndarray) -> Gallery:
        """This gallery plus one entry (the original, when the gallery does not hold it)."""
        return Gallery(self.recognizer, self.weights_sha256, self.ids + [cid],
                       np.vstack([self.embeddings, emb[None].astype(np.float32)]), self.skipped, self.reused)

    def ranks(self, queries: np.ndarray, target_ids: list[str]) -> np.ndarray:
        row = {cid: i for i, cid in enumerate(self.ids)}
        return retrieval_ranks(queries, self.embeddings, np.array([row[t] for t in target_ids]))


def build_gallery(entries: list[tuple[str, Path]], rec: Recognizer, embedder: Embedder,
                  cache: str | Path | None = None, stride: int = 1) -> Gallery:
    """Video embeddings of every entry (every `stride`-th frame), reusing a cache file (same
    recogniser name, network (how it computes), weight hash and stride, unchanged entry fingerprint)
    and rewriting it atomically. No entry -> InputError."""
    from tqdm import tqdm

    if not entries:
        raise InputError(None, "the gallery is empty (no videos, images or frame folders found)")
    sha = rec.weights_sha256
    old = _load_cache(cache, rec.name, sha, stride, rec.network)
    ids, embs, fps, skipped, reused = [], [], [], [], 0
    for cid, path in tqdm(entries, desc=f"gallery [{rec.name}]", unit="clip", disable=len(entries) < 50):
        fp = _fingerprint(path)
        if cid in old and old[cid][0] == fp:
            emb, reused = old[cid][1], reused + 1
        else:
            emb = embedder.video(rec, load_frame_clip(path, cid).every(stride))
        if emb is None or np.isnan(emb).any():
            skipped.append({"id": cid, "path": str(path), "reason": "no face in any frame"})
            continue
        ids.append(cid)
        embs.append(emb)
        fps.append(fp)
    if not ids:
        raise InputError(None, f"the gallery is empty: none of its {len(entries)} entries has a face")
    gallery = Gallery(rec.name, sha, ids, np.stack(embs).astype(np.float32), skipped, reused)
    if cache is not None:
        _save_cache(cache, gallery, fps, stride, rec.network)
    return gallery


def _load_cache(path, name: str, sha: str, stride: int, network: str) -> dict[str, tuple[str, np.ndarray]]:
    if path is None or not Path(path).is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["recognizer"]) != name or str(z["weights_sha256"]) != sha or int(z["frame_stride"]) != stride:
                return {}
            if "network" not in z.files or str(z["network"]) != network:  # same weights run another way (e.g. a fixed input)
                return {}
            return {str(i): (str(f), e) for i, f, e in zip(z["ids"], z["fingerprints"], z["embeddings"])}
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s: unreadable gallery cache, rebuilding (%s)", path, e)
        return {}


def _save_cache(path, gallery: Gallery, fingerprints: list[str], stride: int, network: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, recognizer=gallery.recognizer, weights_sha256=gallery.weights_sha256, frame_stride=stride, network=network,
                     ids=np.array(gallery.ids), fingerprints=np.array(fingerprints),
                     embeddings=gallery.embeddings, skipped=json.dumps(gallery.skipped))


def rank_in_gallery(gallery: Gallery, original_id: str, original_emb: np.ndarray,
                    edited_embs: list[np.ndarray | None]) -> tuple[list[int | None], int]:
    """Rank of the original for each edited video embedding (None: edit without a face = a miss).

    If the gallery lacks the original (by id) its embedding is added first, so the original is
    always retrievable; returns (ranks, gallery size used)."""
    g = gallery if original_id in gallery.ids else gallery.with_entry(original_id, original_emb)
    ok = [i for i, e in enumerate(edited_embs) if e is not None]
    ranks: list[int | None] = [None] * len(edited_embs)
    if ok:
        r = g.ranks(np.stack([edited_embs[i] for i in ok]), [original_id] * len(ok))
        for i, rank in zip(ok, r):
            ranks[i] = int(rank)
    return ranks, len(g)


def _nanstd(xs: list[float]) -> float:
    xs = np.asarray(xs, np.float64)
    xs = xs[~np.isnan(xs)]
    return float(np.std(xs)) if len(xs) else float("nan")


def aggregate(results: list[PairResult]) -> dict:
    """Per method x recogniser: means over edited videos. Videos without a face anywhere are left out
    of the distance / TL / TG means (counted in `videos_no_face`) and are retrieval misses."""
    from .retrieval import mean_reciprocal_rank, recall_at_k

    def nanmean(xs):
        xs = np.asarray([x for x in xs if x is not None], np.float64)
        return float(np.nanmean(xs)) if len(xs) and not np.isnan(xs).all() else float("nan")

    ranks = [r.rank for r in results]
    out = {
        "videos": len(results),
        "videos_no_face": sum(np.isnan(r.cosine_distance) for r in results),
        "cosine_distance": nanmean(r.cosine_distance for r in results),
        "cosine_distance_std": _nanstd([r.cosine_distance for r in results]),
        "tl_id": nanmean(r.tl_id for r in results),
        "tg_id": nanmean(r.tg_id for r in results),
        "frames_no_face": sum(r.frames_no_face_edited for r in results),
        "frames_unpaired": sum(r.frames_unpaired for r in results),
        "frames_compared": sum(r.frames_compared for r in results),
    }
    if results and all(r.gallery_size is not None for r in results):
        rk = np.array([np.inf if r is None else r for r in ranks], np.float64)  # no face: never retrieved
        out |= {"r_at_1": recall_at_k(rk, 1), "mrr": mean_reciprocal_rank(rk),
                "gallery_size": max(r.gallery_size for r in results)}
    return out
