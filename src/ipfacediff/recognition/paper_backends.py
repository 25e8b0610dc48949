"""The paper's recognisers (Table 1: VGGFace, CosFace, FaceNet): real loading code, weights from the
user (local path or the libraries' usual caches); none ship in a package, so absent -> InputError.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .arcface import insightface_onnx_module, output_dim
from .base import Recognizer, require_file
from .facenet_tf import import_tensorflow
from .templates import ARCFACE_112, box_template
from .torch_core import FaceRecognizer, TorchRecognizer


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
    """deepface's Keras VGG-Face with its 4096-d descriptor head. The layer stack is built here (the
    published VGG-Face architecture, in deepface's layer order so its legacy .h5 loads by order):
    importing deepface itself drags in its web-server dependencies."""
    keras = import_tensorflow().keras
    model = vgg_face_keras()
    model.load_weights(str(path))
    # deepface's descriptor: the 4096-d output of the second fully-connected block (layers[-5]).
    descriptor = keras.Model(inputs=model.inputs[0], outputs=keras.layers.Flatten()(model.layers[-5].output))
    return lambda x: np.asarray(descriptor(x, training=False))


def vgg_face_keras(width: float = 1.0):
    """VGG-Face (Parkhi et al. 2015): 13 conv (5 blocks) + 3 fully-connected-as-conv, 2622 classes."""
    keras = import_tensorflow().keras
    layers = keras.layers
    c = lambda n: max(1, int(n * width))  # noqa: E731  (width < 1 only for tests of the loading code)
    model = keras.Sequential([keras.Input((224, 224, 3))])
    for n_convs, ch in ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)):
        for _ in range(n_convs):
            model.add(layers.ZeroPadding2D((1, 1)))
            model.add(layers.Conv2D(c(ch), (3, 3), activation="relu"))
        model.add(layers.MaxPooling2D((2, 2), strides=(2, 2)))
    model.add(layers.Conv2D(c(4096), (7, 7), activation="relu"))
    model.add(layers.Dropout(0.5))
    model.add(layers.Conv2D(c(4096), (1, 1), activation="relu"))
    model.add(layers.Dropout(0.5))
    model.add(layers.Conv2D(2622, (1, 1)))
    model.add(layers.Flatten())
    model.add(layers.Activation("softmax"))
    return model


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


class CosFace(TorchRecognizer):
    """A CosFace-trained ResNet as ONNX in InsightFace's layout (NCHW RGB 112x112; (x - 127.5) / 127.5 unless
    the graph normalises itself), e.g. InsightFace's glintr100.onnx (ResNet-100, Glint360K, CosFace margin)
    or an export of the CosFace authors' model. The path comes from the user (metrics.recognizer_weights.cosface).
    The same torch core as `arcface`'s ONNX form (arcface.insightface_onnx_module)."""

    name = "cosface"
    network = "CosFace ResNet (ONNX, user-supplied; torch)"
    input_size = 112
    template = ARCFACE_112
    dim = 512

    def __init__(self, weights: str | Path | None = None):
        self.weights_path = require_file(weights, "CosFace", "give an InsightFace-layout CosFace ONNX file (e.g. "
                                         "antelopev2/glintr100.onnx) in metrics.recognizer_weights.cosface")
        net, input_0_255 = insightface_onnx_module(self.weights_path)
        self.core = FaceRecognizer(net, f"cosface ONNX ({self.weights_path.name}, via onnx2torch)", input_0_255)
        self.dim = output_dim(self.core)


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
