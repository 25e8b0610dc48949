"""The edit-prompt set (data/prompts/edits.yaml): target prompts paired with reference captions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ROOT
from .layout import Layout
from .errors import InputError

EDIT_PROMPTS = Layout(ROOT).prompts


@dataclass(frozen=True)
class EditPrompt:
    id: str
    category: str
    target: str
    reference: str


def load_edit_prompts(path: str | Path = EDIT_PROMPTS) -> dict[str, EditPrompt]:
    """All edit prompts by id, in file order."""
    path = Path(path)
    try:
        entries = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise InputError(path, "edit-prompt file not found") from e
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML: {str(e).splitlines()[0]}") from e
    prompts: dict[str, EditPrompt] = {}
    for i, entry in enumerate(entries or []):
        try:
            prompt = EditPrompt(**{k: str(entry[k]).strip() for k in ("id", "category", "target", "reference")})
        except (KeyError, TypeError) as e:
            raise InputError(path, f"entry {i}: needs id, category, target, reference") from e
        if not prompt.target:
            raise InputError(path, f"entry {prompt.id!r}: empty target prompt")
        if prompt.id in prompts:
            raise InputError(path, f"duplicate prompt id {prompt.id!r}")
        prompts[prompt.id] = prompt
    return prompts


def select_prompts(ids: list[str] | str, path: str | Path = EDIT_PROMPTS) -> list[EditPrompt]:
    """The prompts named by params `edit.prompts` ('all' or a list of ids)."""
    prompts = load_edit_prompts(path)
    if ids == "all":
        return list(prompts.values())
    missing = [i for i in ids if i not in prompts]
    if missing:
        raise InputError(path, f"unknown edit prompt id(s): {', '.join(missing)}")
    return [prompts[i] for i in ids]
