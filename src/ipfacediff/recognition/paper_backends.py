"""The paper's recognisers (Table 1: VGGFace, CosFace, FaceNet): real loading code, weights from the
user (local path or the libraries' usual caches); none ship in a package, so absent -> InputError.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import Recognizer, require_file
from .templates import ARCFACE_112, box_template


def deepface_weights_dir() -> Path:
    """deepface keeps weights in $DEEPFACE_HOME/.deepface/weights (DEEPFACE_HOME defaults to ~)."""
    return Path(os.environ.get("DEEPFACE_HOME", Path.home())).expanduser() / ".deepface" / "weights"


def torch_checkpoints_dir() -> Path:
    """Where facenet-pytorch caches its state dicts (torch hub's checkpoints folder)."""
    home = os.environ.get("TORCH_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(home).expanduser() / "checkpoints"


class VGGFace(Recognizer):
    """deepface's VGG-Face (Parkhi et al. 2015), 4096-d fc7 descriptor, 224x224 BGR in [0, 1].

    Weights: deepface's vgg_face_weights.h5 (Keras) or vgg_face_weights.onnx (its ONNX export).
    Crop: deepface resizes the detector box with its aspect kept and black padding; here the box
    template with the mean aspect reproduces that geometry.
    """

    name = "vggface"
    network = "VGG-Face (deepface weights)"
    input_size = 224
    template = box_template(224, fill=1.0, keep_aspect=True)
    dim = 4096
    batch_size = 8

    def __init__(self, weights: str | Path | None = None):
        if weights is None:
            d = deepface_weights_dir()
            weights = next((d / f for f in ("vgg_face_weights.h5", "vgg_face_weights.onnx") if (d / f).is_file()),
                           d / "vgg_face_weights.h5")
        self.weights_path = require_file(weights, "VGG-Face", "put deepface's vgg_face_weights.h5 (github.com/"
                                         "serengil/deepface_models releases) there or set metrics.recognizer_weights.vggface")
        if self.weights_path.suffix == ".onnx":
            self._run = _onnx_runner(self.weights_path)
        else:
            self._run = _vggface_keras(self.weights_path)

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        return self._run(faces[..., ::-1].astype(np.float32) / 255.0)  # RGB -> BGR, [0, 1]


def _vggface_keras(path: Path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from deepface.models.facial_recognition.tf.VGGFace import base_model
    from tensorflow.keras.layers import Flatten
    from tensorflow.keras.models import Model

    model = base_model()
    model.load_weights(str(path))
    # deepface's descriptor: the 4096-d output of the second fully-connected block (layers[-5]).
    descriptor = Model(inputs=model.inputs, outputs=Flatten()(model.layers[-5].output))
    return lambda x: np.asarray(descriptor(x, training=False))


def _onnx_runner(path: Path, nchw: bool | None = None):
    """onnxruntime session over NHWC or NCHW float input (layout read from the model)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if nchw is None:
        nchw = len(inp.shape) == 4 and inp.shape[1] == 3

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if nchw else x, dtype=np.float32)
        return sess.run(None, {inp.name: x})[0].reshape(len(x), -1)

    return run


class CosFace(Recognizer):
    """A CosFace-trained ResNet as ONNX (InsightFace layout: NCHW RGB, (x - 127.5) / 127.5, 112x112),
    e.g. InsightFace's glintr100.onnx (ResNet-100, Glint360K, CosFace margin) or an export of the
    CosFace authors' model. The path comes from the user (metrics.recognizer_weights.cosface)."""

    name = "cosface"
    network = "CosFace ResNet (ONNX, user-supplied)"
    input_size = 112
    template = ARCFACE_112
    dim = 512

    def __init__(self, weights: str | Path | None = None):
        self.weights_path = require_file(weights, "CosFace", "give an InsightFace-layout CosFace ONNX file (e.g. "
                                         "antelopev2/glintr100.onnx) in metrics.recognizer_weights.cosface")
        self._run = _onnx_runner(self.weights_path, nchw=True)

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        out = self._run((faces.astype(np.float32) - 127.5) / 127.5)
        self.dim = out.shape[1]
        return out


class FaceNetVGGFace2(Recognizer):
    """facenet-pytorch's InceptionResnetV1 with its VGGFace2 state dict (20180402-114759-vggface2.pt),
    160x160 RGB, fixed standardisation (x - 127.5) / 128, MTCNN-box crop (margin 0 as its README)."""

    name = "facenet_vggface2"
    network = "FaceNet InceptionResnetV1 (facenet-pytorch 2.6.0, VGGFace2 state dict)"
    input_size = 160
    template = box_template(160, fill=1.0, keep_aspect=False)
    dim = 512
    batch_size = 16

    def __init__(self, weights: str | Path | None = None):
        import torch
        from facenet_pytorch import InceptionResnetV1

        weights = weights or torch_checkpoints_dir() / "20180402-114759-vggface2.pt"
        self.weights_path = require_file(weights, "facenet-pytorch VGGFace2", "download 20180402-114759-vggface2.pt "
                                         "(github.com/timesler/facenet-pytorch releases v2.2.9) there or set "
                                         "metrics.recognizer_weights.facenet_vggface2")
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}  # classifier head unused
        self._model = InceptionResnetV1(pretrained=None, classify=False).eval()
        self._model.load_state_dict(state, strict=True)

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(faces).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            return self._model((x - 127.5) / 128.0).numpy()
