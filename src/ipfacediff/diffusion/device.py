"""Device and dtype names from the settings -> torch objects."""

from __future__ import annotations

import torch

from ..errors import InputError


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    if str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def resolve_dtype(spec: str | torch.dtype) -> torch.dtype:
    if isinstance(spec, torch.dtype):
        return spec
    if str(spec) not in _DTYPES:
        raise InputError(None, f"unknown dtype {spec!r}; expected one of {', '.join(_DTYPES)}")
    return _DTYPES[str(spec)]
