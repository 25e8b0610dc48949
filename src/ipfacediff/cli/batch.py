"""`ipfacediff batch jobs.yaml`: edit videos x prompts x option sets, resumable (see app/batch.py)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("batch", help="edit every video x prompt x option set of a jobs file; reruns skip finished outputs")
    p.add_argument("jobs", help="jobs file (YAML: videos, prompts, optional defaults/options/output_dir)")
    p.set_defaults(func=run_batch_cli)


def run_batch_cli(args) -> int:
    from pathlib import Path

    from ..app.batch import load_jobs, run_batch, summary_table
    from ..fsio import atomic_path

    _, out_dir = load_jobs(args.jobs)  # validate before any work
    rows = run_batch(args.jobs)
    table = summary_table(rows)
    with atomic_path(Path(out_dir) / "summary.md") as tmp:
        tmp.write_text(table + "\n")
    print(table)
    failed = sum(r["status"].startswith("failed") for r in rows)
    done = sum(r["status"] == "done" for r in rows)
    print(f"batch: {done} edited, {len(rows) - done - failed} already done, {failed} failed -> {out_dir}")
    return 1 if failed else 0
