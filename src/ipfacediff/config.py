"""Parameters: conf/ (Hydra) is the source, params.yaml the composed file DVC and the stages read.

`python -m ipfacediff.config --write [overrides...]` recomposes params.yaml; `--check` fails if it
has drifted from conf/. Code reads the parameters typed and validated: `settings.load_settings`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
PARAMS = ROOT / "params.yaml"
HEADER = "# Generated from conf/ by `python -m ipfacediff.config --write`; edit conf/, not this file.\n"


def compose(overrides: list[str] | None = None, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """Compose conf/config.yaml with `overrides` the way `dvc exp run -S` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
    return OmegaConf.to_container(cfg, resolve=True)


def dump(params: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(params, sort_keys=False, default_flow_style=None, width=100)


def load_params(path: str | Path = PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "parameters file not found (run `python -m ipfacediff.config --write`)")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(params, dict):
        raise InputError(path, "expected a mapping of parameter sections")
    return params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ipfacediff.config", description=__doc__)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="recompose params.yaml from conf/")
    mode.add_argument("--check", action="store_true", help="exit 1 if params.yaml differs from conf/")
    mode.add_argument("--show", action="store_true", help="print the composed parameters")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=paper edit.steps=20")
    args = ap.parse_args(argv)
    text = dump(compose(args.overrides))
    if args.show:
        sys.stdout.write(text)
    elif args.write:
        from .fsio import write_text

        write_text(PARAMS, text)
    elif not PARAMS.is_file() or PARAMS.read_text() != text:
        print(f"{PARAMS}: out of date with conf/ (run `python -m ipfacediff.config --write`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
