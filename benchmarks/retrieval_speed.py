"""Retrieval speed at the paper's gallery size: queries/second against 35,000 video embeddings.

    python benchmarks/retrieval_speed.py [--gallery 35000] [--dims 128 512 4096] [--out benchmarks/results/retrieval_speed.json]

Random unit vectors stand in for video embeddings (speed does not depend on their values). Each
query is ranked exactly as the metrics stage does it (`retrieval_ranks`: one matrix product, the
target's similarity, a >= count), one query per call and in batches. Also times building the
normalised index array and its .npz round trip (the gallery cache).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from ipfacediff.fsio import write_json  # noqa: E402
from ipfacediff.metrics.retrieval import normalize, retrieval_ranks  # noqa: E402


def _time(fn, min_s: float = 1.0) -> tuple[float, int]:
    """Mean seconds per call over at least `min_s` (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return dt / n, n


def bench(gallery_size: int, dim: int, batches: list[int], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    gallery = normalize(rng.standard_normal((gallery_size, dim), dtype=np.float32))
    build_s = time.perf_counter() - t0
    buf = io.BytesIO()
    t0 = time.perf_counter()
    np.savez(buf, embeddings=gallery, ids=np.array([f"v{i:06d}" for i in range(gallery_size)]))
    buf.seek(0)
    with np.load(buf) as z:
        _ = z["embeddings"], z["ids"]
    npz_s = time.perf_counter() - t0
    targets_all = rng.integers(0, gallery_size, max(batches))
    # queries: noisy copies of their targets, so ranks are realistic (mostly 1)
    queries_all = normalize(gallery[targets_all] + 0.05 * rng.standard_normal((max(batches), dim), dtype=np.float32))
    out = {"gallery": gallery_size, "dim": dim, "index_build_s": round(build_s, 4), "npz_roundtrip_s": round(npz_s, 4),
           "index_mb": round(gallery.nbytes / 2**20, 1), "batches": {}}
    for b in batches:
        q, t = queries_all[:b], targets_all[:b]
        sec, n = _time(lambda: retrieval_ranks(q, gallery, t))
        out["batches"][str(b)] = {"queries_per_s": round(b / sec, 1), "ms_per_call": round(sec * 1000, 3), "calls": n}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gallery", type=int, default=35000)
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 512, 4096])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 25, 1000])
    ap.add_argument("--out", default="benchmarks/results/retrieval_speed.json")
    args = ap.parse_args()
    results = [bench(args.gallery, d, args.batches) for d in args.dims]
    cfg = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
    blas = (cfg.get("Build Dependencies", {}).get("blas", {}) or {}).get("name", "unknown") if cfg else "unknown"
    report = {
        "what": "ranks of the original among a random 35k-entry gallery, ipfacediff.metrics.retrieval.retrieval_ranks",
        "hardware": {"cpu": _cpu_name(), "cores": os.cpu_count(), "machine": platform.machine(),
                     "load_average_1m": round(os.getloadavg()[0], 2)},  # other work on the machine slows it
        "software": {"python": platform.python_version(), "numpy": np.__version__, "blas": blas},
        "results": results,
    }
    write_json(args.out, report)
    for r in results:
        cells = ", ".join(f"batch {b}: {v['queries_per_s']:,.0f} q/s" for b, v in r["batches"].items())
        print(f"gallery {r['gallery']:,} x {r['dim']}-d: {cells} (index {r['index_mb']} MB)")
    print(f"wrote {args.out}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
