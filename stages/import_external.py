"""import_external stage: `python stages/import_external.py [--params params.yaml] [--src DIR]
[--prepped DIR] [--out DIR]`.

Other methods' outputs placed by the user (metrics.external_dir/<method>/<prompt>/<vid>.mp4 for
metrics.external_methods, e.g. DVA, STIT, LTFE) are put on the original's crop timeline and crop
space (see ipfacediff.metrics.external) under OUT/<method>/<prompt>/<vid>.mp4, so the metrics
stages measure them like our edits. OUT/manifest.json records each input's sha256, and lists
methods without outputs as "not provided" (the report then shows the paper's numbers, labelled).
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
    ap.add_argument("--src", help="default: metrics.external_dir")
    ap.add_argument("--prepped", default=str(DAG.prepped))
    ap.add_argument("--out", default=str(DAG.imported))
    args = ap.parse_args(argv)
    try:
        from ipfacediff.metrics.external import import_external

        settings = load_settings(args.params)
        cfg = settings.metrics
        manifest = import_external(args.src or cfg.external_dir, args.prepped, args.out, cfg.external_methods,
                                   settings.profile)
    except InputError as e:
        print(f"import_external: error: {e}", file=sys.stderr)
        return 2
    for method, entries in manifest["methods"].items():
        n = "not provided" if isinstance(entries, str) else f"{len(entries)} videos imported"
        print(f"import_external [{manifest['profile']}] {method}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
