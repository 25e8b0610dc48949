"""The identity and directional branches over one base UNet, as saved by the fine-tuning stages.

On disk a branch folder holds either
  - a LoRA adapter: `pytorch_lora_weights.safetensors` (diffusers' `save_lora_adapter`), or
  - a full UNet: `config.json` + `diffusion_pytorch_model.safetensors` (`save_pretrained`),
plus `branch.json` ({"name", "mode", "base_hash", "steps", ...}) written by `save_branch`.

At run time LoRA branches are two named adapters on ONE base UNet (switched with `set_adapters`),
full branches are separate UNets. A missing or disabled branch falls back to the base weights, which
is how the "no fine-tuning" ablations are expressed.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from ..errors import InputError
from ..fsio import atomic_dir, canonicalize_safetensors

BRANCHES = ("identity", "directional")
LORA_FILE = "pytorch_lora_weights.safetensors"
META_FILE = "branch.json"
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


def lora_config(rank: int, alpha: float | None = None):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)


def branch_mode(path: str | Path) -> str | None:
    """'lora', 'full', or None when `path` holds no branch."""
    path = Path(path)
    if (path / LORA_FILE).is_file():
        return "lora"
    if (path / "config.json").is_file():
        return "full"
    return None


def save_branch(unet, out_dir: str | Path, name: str, mode: str, meta: dict | None = None) -> None:
    """Atomically write branch `name` of `unet` (adapter `name` for LoRA, the whole UNet for full)."""
    if name not in BRANCHES:
        raise ValueError(f"unknown branch {name!r}; expected one of {BRANCHES}")
    with atomic_dir(out_dir) as tmp:
        if mode == "lora":
            # peft keeps target_modules as a set, which diffusers writes into the file's metadata in
            # hash-seed order (different every process): sort sets so the same weights give the same bytes
            cfg = unet.peft_config[name]
            sets = {k: v for k, v in vars(cfg).items() if isinstance(v, set)}
            for k, v in sets.items():
                setattr(cfg, k, sorted(v))
            try:
                unet.save_lora_adapter(str(tmp), adapter_name=name, safe_serialization=True, weight_name=LORA_FILE)
            finally:
                for k, v in sets.items():
                    setattr(cfg, k, v)
        elif mode == "full":
            unet.save_pretrained(str(tmp), safe_serialization=True)
        else:
            raise ValueError(f"unknown branch mode {mode!r}; expected 'lora' or 'full'")
        for weights in tmp.glob("*.safetensors"):  # same weights, same bytes (metadata key order)
            canonicalize_safetensors(weights)
        (tmp / META_FILE).write_text(json.dumps({"name": name, "mode": mode, **(meta or {})}, indent=2, default=str))


def read_branch_meta(path: str | Path) -> dict:
    meta = Path(path) / META_FILE
    return json.loads(meta.read_text()) if meta.is_file() else {}


@dataclass
class BranchSet:
    """Which UNet (and which adapter on it) serves each branch.

    `unets[name]` is the module to call for branch `name`; `adapters[name]` is the LoRA adapter to
    activate on it, or None for plain weights (base or full fine-tune).
    """

    base: torch.nn.Module
    unets: dict[str, torch.nn.Module] = field(default_factory=dict)
    adapters: dict[str, str | None] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[torch.nn.Module]:
        """Yield the UNet for branch `name` with its adapter (or no adapter) active."""
        unet = self.unets.get(name, self.base)
        _activate_adapter(unet, self.adapters.get(name))
        yield unet

    def distinct_unets(self) -> list[torch.nn.Module]:
        """Every UNet module in use once (processors and hooks go on each)."""
        seen: dict[int, torch.nn.Module] = {id(self.base): self.base}
        for unet in self.unets.values():
            seen.setdefault(id(unet), unet)
        return list(seen.values())


def _lora_layers(unet: torch.nn.Module) -> list:
    """The peft LoRA layers of `unet`, found once: switching walks this list, not every module."""
    layers = getattr(unet, "_ipfacediff_lora_layers", None)
    if layers is None or len(layers) == 0:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
        unet._ipfacediff_lora_layers = layers
    return layers


def _activate_adapter(unet: torch.nn.Module, adapter: str | None) -> None:
    """Make `adapter` the only active LoRA adapter of `unet` (None: all adapters off).

    The editor switches branches twice per frame batch, under no_grad. peft's `set_adapter` /
    `enable_adapters` (what diffusers' set_adapters/disable_adapters call) also set requires_grad on
    every adapter parameter, a walk over all of them on every switch (about 40 ms at the sample
    profile's size, more at true size), which inference does not need: the switch sets each cached
    layer's active-adapter list and disable flag only (the two attributes peft's own setters end
    with), and checks on one layer that peft reads them back as set.
    """
    if not getattr(unet, "peft_config", None):
        return
    layers = _lora_layers(unet)
    probe = layers[0]
    if adapter is None:
        if not probe.disable_adapters:
            for layer in layers:
                layer._disable_adapters = True
    elif probe.disable_adapters or list(probe.active_adapters) != [adapter]:
        if adapter not in unet.peft_config:
            raise ValueError(f"no LoRA adapter {adapter!r} on this UNet (it has {sorted(unet.peft_config)})")
        for layer in layers:
            layer._active_adapter = [adapter]
            layer._disable_adapters = False
    if probe.disable_adapters != (adapter is None) or (adapter is not None and list(probe.active_adapters) != [adapter]):
        raise RuntimeError(f"peft did not take the adapter switch to {adapter!r} (peft's layer attributes changed?)")


def add_lora_adapters(unet: torch.nn.Module, configs: dict) -> None:
    """Add the LoRA adapters `configs` ({name: LoraConfig}) to a UNet that has none, through ONE
    peft tuner: created with every config, it injects the first; the others go in with the tuner's
    `inject_adapter`, which is how peft adds an adapter to an adapted model (PeftModel.add_adapter
    does the same). Calling diffusers' `add_adapter` once per adapter would build a second tuner over
    an already adapted model, which peft warns about ("Already found a `peft_config` attribute")."""
    from peft.tuners.lora import LoraModel

    if getattr(unet, "peft_config", None):
        raise ValueError(f"UNet already has adapters {sorted(unet.peft_config)}")
    first, *rest = configs
    tuner = LoraModel(unet, dict(configs), adapter_name=first)
    for name in rest:
        tuner.inject_adapter(unet, name)
    unet._hf_peft_config_loaded = True  # what diffusers' loader sets: its adapter methods work on it


def _lora_file(path: Path) -> tuple[object, dict[str, torch.Tensor]]:
    """(LoraConfig, state dict) of a branch saved by `save_branch` (diffusers writes the adapter's
    LoraConfig into the safetensors metadata), or (None, {}) for files without that metadata."""
    from peft import LoraConfig
    from safetensors import safe_open

    file = Path(path) / LORA_FILE
    try:
        with safe_open(str(file), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("lora_adapter_metadata", "null"))
            state = {k: f.get_tensor(k) for k in f.keys()} if meta else {}  # noqa: SIM118 (safe_open is no dict)
    except Exception as e:  # corrupt or not a safetensors file
        raise InputError(file, f"cannot load LoRA adapter: {e}") from e
    if not meta:
        return None, {}
    fields = LoraConfig.__dataclass_fields__
    return LoraConfig(**{k: v for k, v in meta.items() if k in fields}), state


def _attach_loras(unet: torch.nn.Module, paths: dict[str, Path]) -> None:
    """Attach LoRA branches to `unet` through ONE peft tuner (`add_lora_adapters`), then load each
    adapter's weights. Loading each with diffusers' `load_lora_adapter` would build a second tuner
    over an already adapted model, which peft warns about on every run."""
    from peft import set_peft_model_state_dict

    loaded = {name: _lora_file(path) for name, path in paths.items()}
    plain = {n: c for n, (c, _) in loaded.items() if c is not None}
    if plain and not getattr(unet, "peft_config", None):
        add_lora_adapters(unet, plain)
    for name, (config, state) in loaded.items():
        if name in plain and config is plain.get(name) and getattr(unet, "peft_config", {}).get(name) is config:
            result = set_peft_model_state_dict(unet, state, adapter_name=name)
            unexpected = getattr(result, "unexpected_keys", None) or []
            if unexpected:
                raise InputError(paths[name] / LORA_FILE, f"cannot load LoRA adapter: {len(unexpected)} weights match no "
                                                          f"layer of this UNet (e.g. {unexpected[0]})")
            continue
        try:  # no config in the file (another tool's LoRA), or adapters already present: diffusers' loader
            unet.load_lora_adapter(str(paths[name]), adapter_name=name, prefix=None, weight_name=LORA_FILE,
                                   use_safetensors=True)
        except Exception as e:  # corrupt file or adapter for another architecture
            raise InputError(paths[name] / LORA_FILE, f"cannot load LoRA adapter: {e}") from e


def load_branches(base_unet: torch.nn.Module, paths: dict[str, str | Path | None]) -> BranchSet:
    """Attach each branch in `paths` to `base_unet`; None or an empty folder means base weights."""
    branches = BranchSet(base=base_unet)
    loras = {name: Path(path) for name, path in paths.items() if path is not None and branch_mode(path) == "lora"}
    if set(loras) - set(BRANCHES):
        raise ValueError(f"unknown branch {min(set(loras) - set(BRANCHES))!r}; expected one of {BRANCHES}")
    _attach_loras(base_unet, loras)
    for name, path in paths.items():
        if name not in BRANCHES:
            raise ValueError(f"unknown branch {name!r}; expected one of {BRANCHES}")
        mode = None if path is None else branch_mode(path)
        if path is not None and mode is None and Path(path).exists() and any(Path(path).iterdir()):
            raise InputError(path, f"not a branch folder (no {LORA_FILE} and no config.json)")
        if mode == "lora":  # attached above
            branches.unets[name] = base_unet
            branches.adapters[name] = name
            branches.sources[name] = f"lora:{path}"
        elif mode == "full":
            try:
                unet = type(base_unet).from_pretrained(str(path), torch_dtype=base_unet.dtype)
            except Exception as e:
                raise InputError(path, f"cannot load full UNet branch: {e}") from e
            branches.unets[name] = unet.to(base_unet.device)
            branches.adapters[name] = None
            branches.sources[name] = f"full:{path}"
        else:
            branches.unets[name] = base_unet
            branches.adapters[name] = None
            branches.sources[name] = "base"
    return branches
