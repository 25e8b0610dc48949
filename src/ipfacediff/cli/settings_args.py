"""CLI options derived from the typed settings tree (settings.py): one source for names, types,
defaults and help.

A settings field marked `metadata=cli(help)` becomes `--field-name` of `ipfacediff edit` (and of
`invert` with `cli(help, invert=True)`): the type comes from the annotation, the help from the
metadata, and the default shown is the field's default (= conf/config.yaml, tests/test_settings.py).
The parsed value stays None unless given, so an absent flag falls back to params.yaml when there is one.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Union

from ..errors import InputError
from ..settings import Settings

SECTIONS = ("", "data", "edit")  # root fields, then the sections an edit reads


@dataclass(frozen=True)
class SettingOption:
    section: str  # "" for a root field
    name: str  # the field
    type: Callable[[str], Any]
    default: Any
    help: str
    invert: bool

    @property
    def key(self) -> str:
        """Its dotted key in params.yaml."""
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _scalar_type(hint: Any) -> Callable[[str], Any]:
    """int / float / str for an annotation of one of them (optionally `| None`)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    if hint in (int, float, str):
        return hint
    raise TypeError(f"a cli() setting must be int, float or str, not {hint}")


def setting_options() -> list[SettingOption]:
    """Every settings field marked for the CLI, root fields first, in declaration order."""
    out = []
    for section in SECTIONS:
        cls = type(getattr(Settings(), section)) if section else Settings
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "cli" in f.metadata:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                out.append(SettingOption(section, f.name, _scalar_type(hints[f.name]), default, f.metadata["cli"],
                                         bool(f.metadata.get("cli_invert"))))
    return out


def add_setting_arguments(parser, invert: bool = False, only: set[str] | None = None) -> None:
    """`--field-name` for each marked setting (only those marked `invert` for the invert command; only
    the fields named in `only` where given)."""
    for opt in setting_options():
        if (invert and not opt.invert) or (only is not None and opt.name not in only):
            continue
        parser.add_argument(opt.flag, type=opt.type, default=None, metavar=opt.type.__name__.upper(),
                            help=f"{opt.help} (default: params {opt.key}; {opt.default!r} in conf/)")


def apply_setting_arguments(settings: Settings, args) -> Settings:
    """`settings` with every given setting flag in place, each section re-validated; a bad value is an
    InputError naming the flag."""
    for opt in setting_options():
        value = getattr(args, opt.name, None)
        if value is None:
            continue
        try:
            if opt.section:
                section = dataclasses.replace(getattr(settings, opt.section), **{opt.name: value})
                problems = section.validate() if hasattr(section, "validate") else []
                settings = dataclasses.replace(settings, **{opt.section: section})
            else:
                settings = dataclasses.replace(settings, **{opt.name: value})
                problems = settings.validate()
        except InputError as e:
            problems = [e.problem]
        if problems:
            raise InputError(None, f"{opt.flag} {value!r}: {'; '.join(problems)}")
    return settings
