"""ArcFace-family recognisers on 112x112 ArcFace-aligned crops, one torch core each (metrics and loss).

- insightface's IResNet (arcface_torch layout: r18..r200, 512-d) from a state dict (.pth/.pt/.safetensors);
- an InsightFace pack's recognition ONNX (buffalo_l/w600k_r50.onnx, antelopev2/glintr100.onnx, ...)
  converted to torch (`onnx_torch_module`).

Registered as `arcface` (either file; `finetune_id.recognizer_weights` in the paper profile) and used by
`cosface` (paper_backends.py: a CosFace-trained InsightFace-layout ONNX).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from .base import require_file
from .onnx_torch import fold_constants, strip_stale_inputs
from .templates import ARCFACE_112
from .torch_core import FaceRecognizer, TorchRecognizer


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
    """An InsightFace pack's recogniser as a differentiable torch module, and whether it takes 0-255 input.
    Like insightface's ArcFaceONNX: a graph that starts with Sub and Mul normalises itself (0-255 RGB
    in), else it wants (x - 127.5) / 127.5."""
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


def arcface_core(weights: str | Path | None) -> FaceRecognizer:
    """The frozen torch core of an ArcFace IResNet state dict or InsightFace ONNX at `weights`."""
    if not weights:
        raise InputError("params.yaml", "finetune_id.recognizer_weights (or metrics.recognizer_weights.arcface): ArcFace "
                                        "needs a weight path (IResNet-100 state dict backbone.pth, or an InsightFace "
                                        "pack's recognition .onnx)")
    if Path(weights).suffix.lower() == ".onnx":
        net, input_0_255 = insightface_onnx_module(weights)
        return FaceRecognizer(net, f"arcface ONNX ({Path(weights).name}, via onnx2torch)", input_0_255)
    return FaceRecognizer(iresnet_from_file(weights), f"arcface IResNet ({Path(weights).name})", False)


class ArcFace(TorchRecognizer):
    """insightface ArcFace (IResNet state dict or pack ONNX), weights from the user."""

    name = "arcface"
    network = "ArcFace (insightface IResNet state dict or pack ONNX, user-supplied; torch)"
    input_size = 112
    template = ARCFACE_112
    dim = 512

    def __init__(self, weights: str | Path | None = None):
        self.core = arcface_core(weights)
        self.weights_path = require_file(weights, "ArcFace", "give an IResNet backbone.pth or an InsightFace .onnx")
        self.dim = output_dim(self.core)


def output_dim(core: FaceRecognizer) -> int:
    """Embedding size of a core (read from the weights: one forward pass on a black crop)."""
    with torch.inference_mode():
        return int(core.embed_pixels(torch.zeros(1, 3, core.input_size, core.input_size)).shape[-1])
