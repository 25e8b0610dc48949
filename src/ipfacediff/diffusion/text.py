"""Prompt encoding with the pipeline's text encoder (77-token context; truncation is reported)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Sequence

import torch

from ..errors import InputError

if TYPE_CHECKING:
    from .models import Components


class PromptTruncationWarning(UserWarning):
    """A prompt longer than the text encoder's 77 tokens; the message names the dropped words."""


def truncated_text(tokenizer, prompt: str) -> str:
    """The part of `prompt` the 77-token context drops ('' when it fits)."""
    ids = tokenizer(prompt, truncation=False, add_special_tokens=False).input_ids
    keep = tokenizer.model_max_length - 2  # BOS and EOS
    return tokenizer.decode(ids[keep:]) if len(ids) > keep else ""


@torch.no_grad()
def encode_prompt(components: Components, prompts: str | Sequence[str], allow_empty: bool = True) -> torch.Tensor:
    """Text embeddings (B, 77, D) of `prompts`; warns naming what is truncated beyond 77 tokens."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    tok = components.tokenizer
    for p in prompts:
        if not allow_empty and not p.strip():
            raise InputError(None, "empty prompt: say what the edit should be, e.g. -p 'a person wearing glasses'")
        dropped = truncated_text(tok, p)
        if dropped:
            warnings.warn(f"prompt longer than {tok.model_max_length} tokens; dropped: {dropped!r}", PromptTruncationWarning, stacklevel=2)
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    return components.text_encoder(ids.to(components.text_encoder.device))[0]
