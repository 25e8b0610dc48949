"""`dvc plots show` renders offline (Vega inlined from pinned npm packages, no CDN); no curve is drawn twice."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEMPLATE = ROOT / "workflow" / "plots" / "offline.html"


def test_repo_uses_the_offline_template_with_the_three_libraries_and_their_licences():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".dvc" / "config")
    assert (ROOT / ".dvc" / cfg["plots"]["html_template"].strip()).resolve() == TEMPLATE
    page = TEMPLATE.read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC would inject its CDN tags there
    assert "<script src=" not in page
    for lib in ("vega@5.20.2", "vega-lite@5.2.0", "vega-embed@6.18.2"):
        assert f"/* {lib} */" in page, lib
        licence = (ROOT / "workflow" / "plots" / "licenses" / f"{lib.split('@')[0]}-LICENSE.txt").read_text()
        assert "Redistribution and use in source and binary forms" in licence, lib  # BSD-3-Clause text


def test_dvc_plots_show_writes_a_page_without_cdn(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True, env=env)
    (tmp_path / "curve.tsv").write_text("step\tloss\n1\t2.0\n2\t1.5\n")
    (tmp_path / "dvc.yaml").write_text("plots:\n  - curve.tsv: {x: step, y: loss}\n")
    with open(tmp_path / ".dvc" / "config", "a") as f:
        f.write(f"[plots]\n    html_template = {TEMPLATE}\n")
    proc = subprocess.run(["dvc", "plots", "show", "-o", "out"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "out" / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and "/* vega@5.20.2 */" in html and "vegaEmbed" in html


def _plotted_series(spec: dict) -> list[tuple[str, str]]:
    """(file, column) for every curve dvc.yaml draws, stage-level plots and top-level plots together."""
    series = []
    for stage in spec["stages"].values():
        for entry in stage.get("plots", []):
            for path, props in (entry.items() if isinstance(entry, dict) else [(entry, {})]):
                series.append((path, (props or {}).get("y", "")))
    for entry in spec.get("plots", []):
        for pid, props in (entry.items() if isinstance(entry, dict) else [(entry, {})]):
            y = (props or {}).get("y")
            if isinstance(y, dict):
                series += [(f, c) for f, cols in y.items() for c in ([cols] if isinstance(cols, str) else cols)]
            elif y:
                series += [(pid, c) for c in ([y] if isinstance(y, str) else y)]
            else:
                series.append((pid, ""))
    return series


def test_no_curve_is_drawn_twice():
    series = _plotted_series(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
    assert len(series) == len(set(series)), sorted(s for s in series if series.count(s) > 1)
    assert ("reports/train/identity.tsv", "loss") in series and ("reports/train/identity.tsv", "identity") in series
