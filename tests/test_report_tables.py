"""The paper's numbers file, the tables built beside it, and their Markdown / CSV / LaTeX renderings."""

from __future__ import annotations

import csv
import io
import math

import pytest

from ipfacediff.report.tables import (
    Column,
    NA,
    NT,
    Table,
    load_paper_numbers,
    table1,
    table2,
    table3,
    tex_escape,
    to_csv,
    to_latex,
    to_markdown,
    write_table,
)

PROV = {"profile": "sample", "diffusion_model": {"source": "tiny", "weights": "random"},
        "warning": "sample profile: the edits come from random-weight diffusion models, so these numbers "
                   "exercise the pipeline and are NOT results"}


def test_paper_numbers_file_holds_the_published_values():
    p = load_paper_numbers()
    t1 = p["table1_identity"]["rows"]
    assert t1["ours"]["vggface"] == {"cosine_distance": 0.221, "r_at_1": 0.96, "mrr": 0.97}
    assert t1["no_id_guidance"]["vggface"] == {"cosine_distance": 0.762, "r_at_1": 0.32, "mrr": 0.352}
    assert p["table1_identity"]["gallery_size"] == 35000
    rows = {r["seconds_video"]: r for r in p["table2_time"]["rows"]}
    assert [rows[s]["ours"] for s in (30, 60, 90, 120)] == [6, 15, 32, 98]
    assert [rows[30][m] for m in ("dva", "stit", "ltfe")] == [28, 32, 35]
    assert [rows[120][m] for m in ("dva", "stit", "ltfe")] == [180, 194, 206]
    assert all(rows[s]["frames"] == 10 * s for s in rows)
    t3 = p["table3_temporal"]["rows"]
    assert {m: (v["warp_error"], v["mos"]) for m, v in t3.items()} == {
        "ours": (0.238, 7.7), "dva": (0.256, 4.7), "stit": (0.273, 5.6), "ltfe": (0.463, 3.4)}


def _identity(methods: dict) -> dict:
    return PROV | {"recognizers": [{"name": "sface", "network": "SFace", "weights_sha256": "a" * 64},
                                   {"name": "facenet", "network": "FaceNet", "weights_sha256": "b" * 64}],
                   "gallery": {"sface": {"size": 4}, "facenet": {"size": 4}}, "methods": methods}


def test_table1_puts_paper_values_beside_the_same_recogniser_family():
    m = {"cosine_distance": 0.3, "r_at_1": 0.5, "mrr": 0.75, "tl_id": 0.99, "tg_id": 0.98, "videos": 4}
    t = table1(_identity({"ours": {"origin": "engine", "sface": m, "facenet": m},
                          "tokenflow": {"origin": "engine", "sface": m, "facenet": m}}), load_paper_numbers())
    rows = {(r[0], r[1], r[2], r[9]): r for r in t.values()}
    ours = "IP-FaceDiff (ours, with ID guidance)"
    assert rows[(ours, "this run", "FaceNet (TF graph)", "FaceNet")][10:] == [NT, NT, NT]  # published, not transcribed
    assert rows[(ours, "this run", "SFace", NA)][10:] == [None, None, None]  # no published counterpart
    assert rows[(ours, "paper only", NA, "VGGFace")][10:] == [0.221, 0.96, 0.97]
    assert rows[("tokenflow", "this run", "FaceNet (TF graph)", "FaceNet")][10:] == [None, None, None]  # not in paper
    dva = [r for r in t.values() if r[0].startswith("DVA")]
    assert dva and all("not measured" in r[1] for r in dva)
    assert t.caption.startswith("**Sample profile") and "random-weight" in t.caption and "35,000" in t.caption


def test_table2_and_table3_rows():
    paper = load_paper_numbers()
    timing = {"hardware": {"cpu": "test cpu", "gpu": None},
              "rows": [{"frames": 8, "seconds_video": 0.8, "invert_s": 1.0, "edit_s": 3.0, "total_s": 4.0, "peak_mem_mb": 500}]}
    t2 = table2(timing, paper, PROV)
    assert len(t2.rows) == 4 and t2.rows[0]["s_per_frame"] == pytest.approx(0.5) and t2.rows[0]["paper_ours_min"] == 6
    assert t2.rows[3]["frames"] is None and t2.rows[3]["paper_s_per_frame"] == pytest.approx(98 * 60 / 1200)
    assert "test cpu" in t2.caption and "gpu" not in t2.caption and "one NVIDIA A100" in t2.caption
    assert "missing" in table2(None, paper, PROV).caption
    temporal = PROV | {"flow": "OpenCV DIS", "methods": {"ours": {"origin": "engine", "warp_error": 0.3,
                                                                  "warp_error_std": 0.1, "videos": 4},
                                                         "stit": {"origin": "imported", "warp_error": 0.4,
                                                                  "warp_error_std": 0.0, "videos": 1}},
                       "original_reference": {"warp_error": 0.2, "videos": 2}}
    clip = {"available": True, "clip": "CLIP at models/clip (random weights)", "clip_weights": "random",
            "methods": {"ours": {"clip_score": 20.0, "directional_clip": 0.1}}}
    t3 = table3(temporal, clip, paper)
    by = {r[0]: r for r in t3.values()}
    assert by["IP-FaceDiff (ours, with ID guidance)"][2:] == [0.3, 0.1, 4, 20.0, 0.1, 0.238, 7.7]
    assert by["STIT (Tzaban et al., 2022)"][1] == "this run (imported outputs)" and by["STIT (Tzaban et al., 2022)"][7] == 0.273
    assert "not measured" in by["DVA (Kim et al., CVPR 2023)"][1] and by["DVA (Kim et al., CVPR 2023)"][8] == 4.7
    assert by["original video (reference)"][2] == 0.2
    assert "not reproduced" in t3.caption and "measure nothing" in t3.caption and "OpenCV DIS" in t3.caption


def test_renderings(tmp_path):
    cols = [Column("name", "name"), Column("kind", "kind"), Column("x", "x"), Column("v", "value ↓", 2)]
    t = Table("t_test", "Test & table", "Caption with 50% of_stuff **bold**.", cols,
              [{"name": "a_b", "kind": "x", "v": 0.12345}, {"name": "c|d", "kind": "y", "x": NT, "v": math.nan}], ["note #1"])
    md = to_markdown(t)
    assert "| a_b | x | — | 0.12 |" in md and "c\\|d" in md and "- note #1" in md and md.count("\n| ") == 3
    rows = list(csv.reader(io.StringIO(to_csv(t))))
    assert rows == [["name", "kind", "x", "value ↓"], ["a_b", "x", "", "0.12345"], ["c|d", "y", NT, ""]]
    tex = to_latex(t)
    assert r"a\_b" in tex and r"50\%" in tex and r"Test \& table" in tex and r"$\downarrow$" in tex
    assert "**" not in tex and tex.count(r"\\") >= 3 and r"\begin{tabular}{lllr}" in tex
    assert tex_escape("~^{}") == r"\textasciitilde{}\textasciicircum{}\{\}"
    paths = write_table(t, tmp_path)
    assert sorted(p.name for p in paths) == ["t_test.csv", "t_test.md", "t_test.tex"]
    assert all(p.read_text() for p in paths)
