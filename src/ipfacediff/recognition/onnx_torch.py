"""ONNX recognisers as differentiable torch modules (onnx2torch), for every backend that ships as ONNX.

Quantised graphs (SFace's block-wise int8 weights) are made float first: `DequantizeLinear` of constant
weights evaluated once ((q - zero_point) * scale per block), every node whose inputs are all constants
folded into an initialiser, Dropout removed; the float graph is then converted with onnx2torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn


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


def onnx_torch_module(path: str | Path) -> nn.Module:
    """The ONNX graph at `path` as a plain torch module in eval mode (constant-folded, then onnx2torch)."""
    import onnx
    from onnx2torch import convert

    return convert(fold_constants(strip_stale_inputs(onnx.load(str(path))))).eval()
