"""Start a training stage the way the accelerate config says (dvc.yaml's finetune_* commands go through this).

    python -m ipfacediff.train.launch stages/finetune_id.py [stage args...]

The config is $IPFACEDIFF_ACCELERATE_CONFIG when set, else accelerate's own default file (what
`accelerate config` writes: $HF_HOME/accelerate/default_config.yaml). When it asks for more than one
process (num_processes > 1 or num_machines > 1) the stage runs under `accelerate launch --config_file
CONFIG`, else as `python SCRIPT` in one process; no config means one process. The stage's exit status
and output are the launcher's (the process is replaced, not wrapped).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

ENV_CONFIG = "IPFACEDIFF_ACCELERATE_CONFIG"


def config_file() -> Path | None:
    """The accelerate config in force, or None."""
    if os.environ.get(ENV_CONFIG):
        path = Path(os.environ[ENV_CONFIG]).expanduser()
        if not path.is_file():
            from ..errors import InputError

            raise InputError(path, f"{ENV_CONFIG} names a missing accelerate config (write one with `accelerate config`)")
        return path
    from accelerate.commands.config.config_args import default_config_file

    path = Path(default_config_file)
    return path if path.is_file() else None


def wants_launcher(config: Path | None) -> bool:
    if config is None:
        return False
    from ..errors import InputError

    try:
        cfg = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(config, f"not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(cfg, dict):
        raise InputError(config, "not an accelerate config (expected a mapping)")
    return int(cfg.get("num_processes", 1) or 1) > 1 or int(cfg.get("num_machines", 1) or 1) > 1


def command(script: str, args: list[str], config: Path | None) -> list[str]:
    """The argv that runs `script args` per `config`."""
    if wants_launcher(config):
        accelerate = Path(sys.executable).with_name("accelerate")
        exe = [str(accelerate)] if accelerate.is_file() else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]
        return [*exe, "launch", "--config_file", str(config), script, *args]
    return [sys.executable, script, *args]


def main(argv: list[str] | None = None) -> int:
    from ..errors import InputError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        cmd = command(argv[0], argv[1:], config_file())
    except InputError as e:
        print(f"launch: error: {e}", file=sys.stderr)
        return 2
    if cmd[0] != sys.executable:
        print(f"launch: {' '.join(cmd)}", file=sys.stderr)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
