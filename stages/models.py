"""Stage `models`: build (sample: tiny random weights) or resolve (paper: pretrained, offline) the models.

python stages/models.py [--params params.yaml] [--out models]
Writes models/base/ (diffusers folder, or a pointer ipfacediff.json for pretrained weights) and
models/clip/; see ipfacediff.diffusion.models for the contract.
"""

from __future__ import annotations

import argparse
import sys

from ipfacediff.errors import InputError
from ipfacediff.layout import DAG
from ipfacediff.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(DAG.models))
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.params)
        from ipfacediff.diffusion.models import prepare_models
        from ipfacediff.tracking import start_run

        with start_run("models", settings.as_params()) as run:
            infos = prepare_models(settings.models, args.out, seed=settings.seed, sample_size=settings.data.crop_size)
            run.summary({f"{k}_{f}": v.get(f) for k, v in infos.items() for f in ("source", "weights")})
        for name, info in infos.items():
            print(f"models/{name}: {info['source']} ({info['weights']} weights) sha256 {info['sha256']['combined'][:12]}")
    except InputError as e:
        print(f"models: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
