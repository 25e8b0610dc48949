"""Random weights drawn the same on every machine: numpy PCG64 per parameter, keyed by seed and name.

`torch.manual_seed` + module constructors give weights that depend on the torch build and on the
order modules are built in (a diffusers/transformers upgrade that adds or reorders a layer shifts
every draw after it). Here every parameter gets its own PCG64 stream seeded from (seed, sha256 of
`scope/parameter.name`), drawn in float64 by numpy (whose Generator streams are specified bit for
bit and pinned in requirements) and rounded once to the parameter's dtype: the same bytes on any
x86 CPU, any thread count, any torch build.

Scales follow each layer type's own default initialisation:
  - `torch` convention (diffusers models, built from plain torch layers): Linear/Conv weights and
    biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (= kaiming_uniform(a=sqrt(5)), torch's default), Embedding
    N(0, 1), norms weight 1 bias 0;
  - `transformers` convention (CLIP): Linear/Conv/Embedding weights N(0, initializer_range *
    initializer_factor), biases 0, norms 1/0, CLIP's class embedding N(0, hidden_size**-0.5), and
    constant parameters set by the config (logit_scale) kept as constructed.
A parameter of a type not listed is an error, so a new layer cannot silently fall back to torch's RNG.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

_NORMS = ("GroupNorm", "LayerNorm", "BatchNorm1d", "BatchNorm2d", "InstanceNorm2d", "RMSNorm")
_WEIGHTED = ("Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "LoRACompatibleLinear", "LoRACompatibleConv")
# parameters a config sets to a constant (copied as constructed: already machine-independent)
_CONSTANT_PARAMS = {("CLIPModel", "logit_scale")}


def parameter_rng(seed: int, key: str) -> np.random.Generator:
    """The PCG64 stream of one parameter: seeded by `seed` and the sha256 of its name."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *words])))


def _fan_in(weight_shape: tuple[int, ...]) -> int:
    # torch's _calculate_fan_in_and_fan_out: input channels x receptive field
    return int(weight_shape[1] * math.prod(weight_shape[2:])) if len(weight_shape) > 1 else int(weight_shape[0])


def _draw(kind: str, module: torch.nn.Module, pname: str, shape: tuple[int, ...], rng: np.random.Generator,
          std: float) -> np.ndarray | None:
    """float64 values for one parameter, or None to keep it as constructed (a config constant)."""
    mtype = type(module).__name__
    if (mtype, pname) in _CONSTANT_PARAMS:
        return None
    if mtype in _NORMS or "Norm" in mtype:
        return np.ones(shape) if pname == "weight" else np.zeros(shape)
    if mtype in _WEIGHTED:
        if kind == "transformers":
            return rng.normal(0.0, std, shape) if pname == "weight" else np.zeros(shape)
        bound = 1.0 / math.sqrt(_fan_in(tuple(module.weight.shape)))
        return rng.uniform(-bound, bound, shape)
    if mtype == "Embedding":
        return rng.normal(0.0, std if kind == "transformers" else 1.0, shape)
    if mtype == "CLIPVisionEmbeddings" and pname == "class_embedding":
        return rng.normal(0.0, shape[-1] ** -0.5, shape)
    raise NotImplementedError(f"random_init: no platform-independent rule for {mtype}.{pname}; add one")


@torch.no_grad()
def init_random_weights(model: torch.nn.Module, seed: int, scope: str, kind: str = "torch") -> torch.nn.Module:
    """Overwrite every parameter of `model` with its (seed, `scope/name`)-keyed draw; returns `model`.

    `kind` is the initialisation convention: "torch" (diffusers models) or "transformers" (its
    config's initializer_range/factor are read from `model.config`).
    """
    if kind not in ("torch", "transformers"):
        raise ValueError(f"kind must be 'torch' or 'transformers', got {kind!r}")
    std = 0.02
    if kind == "transformers":
        cfg = model.config
        sub = getattr(cfg, "text_config", cfg)  # CLIPConfig nests the values per tower
        std = float(getattr(sub, "initializer_range", 0.02)) * float(getattr(cfg, "initializer_factor", 1.0))
    for mname, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            key = f"{scope}/{mname}.{pname}" if mname else f"{scope}/{pname}"
            values = _draw(kind, module, pname, tuple(param.shape), parameter_rng(seed, key), std)
            if values is not None:
                param.copy_(torch.from_numpy(np.ascontiguousarray(values)).to(param.dtype))
    return model


def round_significant(x: float, digits: int = 3) -> float:
    """`x` to `digits` significant digits: a factor computed with float reductions (whose last bits
    differ between CPUs) becomes the same number everywhere, unless it sits within ~1e-7 relative of
    a rounding boundary."""
    return float(f"{x:.{digits}g}")
