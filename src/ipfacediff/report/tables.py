"""Tables 1-3 of the paper, this run's rows beside the published ones, as Markdown, CSV and LaTeX.

Cell conventions: a number; "—" where this run did not measure it (or it does not apply);
"n/t" where the paper's value is not transcribed in src/ipfacediff/data/paper_numbers.yaml.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..fsio import write_text
from ..registry import BASELINES, METRICS, method_label, method_order, method_short, table_metrics

PAPER_NUMBERS = Path(__file__).resolve().parents[1] / "data" / "paper_numbers.yaml"
NA, NT = "—", "n/t"
# this run's recogniser -> the paper's column it stands beside (same network family)
PAPER_RECOGNIZER = {"vggface": "vggface", "cosface": "cosface", "facenet_vggface2": "facenet", "facenet": "facenet"}
RECOGNIZER_LABEL = {"sface": "SFace", "dlib": "dlib ResNet", "facenet": "FaceNet (TF graph)", "vggface": "VGGFace",
                    "cosface": "CosFace", "facenet_vggface2": "FaceNet (VGGFace2)"}


def load_paper_numbers(path: str | Path = PAPER_NUMBERS) -> dict:
    return yaml.safe_load(Path(path).read_text())


@dataclass(frozen=True)
class Column:
    key: str  # the row dict's key
    header: str
    digits: int = 3  # decimals of floats (Markdown/LaTeX; the CSV keeps full precision)


def metric_column(key: str, paper: bool = False, key_prefix: str = "") -> Column:
    """The column of registered metric `key` (its paper counterpart with `paper`)."""
    m = METRICS[key]
    return Column(key_prefix + ("paper_" if paper else "") + m.key, m.paper_header if paper else m.header, m.digits)


@dataclass
class Table:
    name: str
    title: str
    caption: str
    columns: list[Column]
    rows: list[dict[str, Any]]  # column key -> value; a missing key is "not measured"
    notes: list[str] = field(default_factory=list)

    @property
    def header(self) -> list[str]:
        return [c.header for c in self.columns]

    def values(self) -> list[list[Any]]:
        """Rows as lists in column order (what the renderings and the W&B table show)."""
        return [[r.get(c.key) for c in self.columns] for r in self.rows]


# ----------------------------------------------------------------------------------- rendering
def cell(v: Any, digits: int = 3) -> str:
    if v is None:
        return NA
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        return NA if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _cells(t: Table) -> list[list[str]]:
    return [[cell(r.get(c.key), c.digits) for c in t.columns] for r in t.rows]


def to_markdown(t: Table) -> str:
    lines = [f"### {t.title}", "", t.caption, "",
             "| " + " | ".join(t.header) + " |", "|" + "|".join("---" for _ in t.header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _cells(t)]
    if t.notes:
        lines += [""] + [f"- {n}" for n in t.notes]
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    """Raw values (full precision), empty for not measured; the caption is not part of the CSV."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.header)
    for r in t.values():
        w.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in r])
    return buf.getvalue()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---", "↓": r"$\downarrow$",
        "↑": r"$\uparrow$", "×": r"$\times$", "±": r"$\pm$"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(t: Table) -> str:
    cols = "l" * 3 + "r" * (len(t.header) - 3)
    body = [" & ".join(tex_escape(c) for c in r) + r" \\" for r in _cells(t)]
    caption = tex_escape(t.caption.replace("**", ""))
    notes = [r"\par\footnotesize " + tex_escape(n) for n in t.notes]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{tex_escape(t.title)}. {caption}}}",
                      rf"\label{{tab:{t.name}}}", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
                      " & ".join(tex_escape(h) for h in t.header) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", *notes, r"\end{table}"]) + "\n"


def write_table(t: Table, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    paths = [out / f"{t.name}.md", out / f"{t.name}.csv", out / f"{t.name}.tex"]
    for p, text in zip(paths, (to_markdown(t), to_csv(t), to_latex(t))):
        write_text(p, text)
    return paths


# ------------------------------------------------------------------------------------ captions
def caption_prefix(prov: dict) -> str:
    dm = prov.get("diffusion_model", {})
    model = f"{dm.get('source', '?')} ({dm.get('weights', '?')} weights" + (f", {dm['spec']}" if dm.get("spec") else "") + ")"
    text = f"Profile `{prov.get('profile', '?')}`; edits made with diffusion model {model}."
    if prov.get("warning"):
        text = f"**{prov['warning'][0].upper()}{prov['warning'][1:]}.** " + text
    return text


# -------------------------------------------------------------------------------------- table 1
T1 = "table1_identity"
T1_PAPER = [m.key for m in table_metrics(T1) if m.paper_key]  # this run's metrics the paper also reports


def _not_measured(m: str) -> str:
    return f"not measured (no outputs in data/external_edits/{m})" if m in BASELINES else "not measured"


def _measured(got: dict) -> str:
    return "this run" if got.get("origin") == "engine" else "this run (imported outputs)"


def table1(identity: dict, paper: dict) -> Table:
    """Identity: per method, this run's recognisers (with the paper's value for the same recogniser
    family in the same row) and rows for paper recognisers this run did not use."""
    p1 = paper[T1]
    paper_rows, paper_rec = p1["rows"], p1["recognizers"]
    measured = identity.get("methods", {})
    recs = [r["name"] for r in identity.get("recognizers", [])]
    rows = []
    methods = method_order(list(measured)) + [m for m in paper_rows if m not in measured]
    for m in methods:
        label = method_label(m)
        got = measured.get(m)
        used_paper = set()
        if got:
            for r in recs:
                v = got.get(r, {})
                pr = PAPER_RECOGNIZER.get(r)
                pv = (paper_rows.get(m) or {}).get(pr) if pr else None
                used_paper.add(pr)
                rows.append({"method": label, "measured": _measured(got), "recognizer": RECOGNIZER_LABEL.get(r, r),
                             **{k.key: v.get(k.json_key) for k in table_metrics(T1)},
                             "paper_recognizer": paper_rec.get(pr, NA) if pr else NA,
                             **_paper_cells(pv, pr is not None and m in paper_rows)})
        for pr, pname in paper_rec.items():
            if pr in used_paper:
                continue
            pv = (paper_rows.get(m) or {}).get(pr)
            if got is None or pv is not None:
                rows.append({"method": label, "measured": "paper only" if got else _not_measured(m), "recognizer": NA,
                             "paper_recognizer": pname, **_paper_cells(pv, True)})
    g = identity.get("gallery", {})
    sizes = sorted({v["size"] for k, v in g.items() if isinstance(v, dict) and "size" in v})
    gallery = f"{sizes[0]:,}" if len(sizes) == 1 else ("/".join(f"{s:,}" for s in sizes) if sizes else "no")
    recog = "; ".join(f"{r['name']}: {r['network']} (sha256 {r['weights_sha256'][:12]})" for r in identity.get("recognizers", []))
    caption = (f"{caption_prefix(identity)} Identity preservation. Cosine distance of mean-frame video embeddings "
               f"(lower is better); R@1/MRR: rank of the original among a gallery of {gallery} videos "
               f"(paper: {p1['gallery_size']:,} CelebV-HQ videos), pessimistic ties; TL-ID/TG-ID: STIT's "
               f"adjacent/all-pair identity similarity of the edit relative to its source (1 = as consistent as the "
               f"source). Recognisers this run: {recog}.")
    notes = [f"{NT}: the paper's value is not transcribed in paper_numbers.yaml; {NA}: not measured / not applicable.",
             "Paper rows stand beside this run's recogniser of the same family (FaceNet beside FaceNet); other "
             "recognisers have no published counterpart."]
    columns = [Column("method", "method"), Column("measured", "measured"), Column("recognizer", "recogniser"),
               *[metric_column(k.key) for k in table_metrics(T1)], Column("paper_recognizer", "paper recogniser"),
               *[metric_column(k, paper=True) for k in T1_PAPER]]
    return Table(T1, "Table 1: identity preservation", caption, columns, rows, notes)


def _paper_cells(pv: dict | None, applicable: bool) -> dict:
    """The paper's Table 1 values of one row: None (no counterpart), NT (not transcribed) or the number."""
    if not applicable:
        return {}
    return {f"paper_{k}": NT if pv is None else pv.get(METRICS[k].paper_key) for k in T1_PAPER}


# -------------------------------------------------------------------------------------- table 2
HW_KEYS = ("gpu", "gpu_memory_gb", "cpu", "cpu_cores", "device", "torch_threads", "load_average_1m")


def hardware_text(hw) -> str:
    """The timing stage's hardware record in a few words (known keys first, empty ones dropped)."""
    if isinstance(hw, str):
        return hw
    hw = {k: v for k, v in (hw or {}).items() if v not in (None, "")}
    keys = [k for k in HW_KEYS if k in hw] or list(hw)
    return ", ".join(f"{k.replace('_', ' ')} {hw[k]}" for k in keys) or "not recorded"


T2 = "table2_time"
T2_PAPER = ["ours", *BASELINES]  # the paper's minutes per video, one column per method


def table2(timing: dict | None, paper: dict, prov: dict) -> Table:
    """Time vs video length: rung k of this run's ladder beside rung k of the paper's."""
    p2 = paper[T2]
    ours = (timing or {}).get("rows", [])
    rows = []
    for k in range(max(len(ours), len(p2["rows"]))):
        r = ours[k] if k < len(ours) else {}
        p = p2["rows"][k] if k < len(p2["rows"]) else {}
        rows.append({"rung": k + 1, "frames": r.get("frames"), "seconds_video": r.get("seconds_video"),
                     **{m.key: r.get(m.json_key) for m in table_metrics(T2) if m.source == "timing"},
                     "s_per_frame": r["total_s"] / r["frames"] if r.get("total_s") is not None and r.get("frames") else None,
                     "paper_frames": p.get("frames"), "paper_seconds_video": p.get("seconds_video"),
                     **{f"paper_{m}_min": p.get(m) for m in T2_PAPER},
                     "paper_s_per_frame": p["ours"] * 60 / p["frames"] if p else None})
    hw_text = hardware_text((timing or {}).get("hardware"))
    kinds = sorted({r["memory_kind"] for r in ours if r.get("memory_kind")})
    memory = f"peak memory in MB ({', '.join(kinds)})" if kinds else "peak memory in MB"
    caption = (f"{caption_prefix(prov)} Time against video length. This run ({hw_text}): seconds for DDIM "
               f"inversion, editing and both; {memory}. Paper ({p2['hardware']}): minutes per video for "
               f"IP-FaceDiff and the baselines. Rung k of each ladder side by side"
               + ("" if timing else "; this run's timing output is missing (timing stage not run)") + "."
               + (f" Timing note: {timing['note']}." if (timing or {}).get("note") else ""))
    notes = ["s/frame compares per-frame cost across different hardware and lengths; only the shape of the curve "
             "(the paper's is superlinear: 6 -> 98 min for 4x the frames) is comparable."]
    columns = [Column("rung", "rung", 0), Column("frames", "frames", 0), Column("seconds_video", "video s", 1),
               *[metric_column(m.key) for m in table_metrics(T2)],
               Column("paper_frames", "paper frames", 0), Column("paper_seconds_video", "paper video s", 0),
               *[Column(f"paper_{m}_min", f"paper {method_short(m)} min", 0) for m in T2_PAPER],
               Column("paper_s_per_frame", "paper ours s/frame", 2)]
    return Table(T2, "Table 2: time against video length", caption, columns, rows, notes)


# -------------------------------------------------------------------------------------- table 3
T3 = "table3_temporal"


def _paper_column(m) -> Column:
    col = metric_column(m.key, paper=True)
    return dataclasses.replace(col, header=col.header + " (not reproduced)") if m.source == "paper" else col


def table3(temporal: dict, clip: dict | None, paper: dict) -> Table:
    p3 = paper[T3]
    measured = temporal.get("methods", {})
    clip_m = (clip or {}).get("methods", {})
    shown = [m for m in table_metrics(T3) if m.source in ("temporal", "clip")]
    published = [m for m in table_metrics(T3) if m.paper_key]
    rows = []
    for m in method_order(list(measured)) + [m for m in p3["rows"] if m not in measured]:
        v, c, p = measured.get(m), clip_m.get(m, {}), p3["rows"].get(m, {})
        by_source = {"temporal": v or {}, "clip": c}
        row = {"method": method_label(m), "measured": _not_measured(m) if v is None else _measured(v),
               **{k.key: by_source[k.source].get(k.json_key) for k in shown}}
        if m in p3["rows"]:
            row |= {f"paper_{k.key}": p.get(k.paper_key, NT) for k in published}
        rows.append(row)
    ref = temporal.get("original_reference", {})
    rows.append({"method": "original video (reference)", "measured": "this run", "warp_error": ref.get("warp_error"),
                 "temporal_videos": ref.get("videos")})
    clip_note = (f"CLIP: {clip.get('clip')}" if clip and clip.get("available") else
                 f"CLIP scores not computed ({(clip or {}).get('reason', 'no clip.json')})")
    random_clip = clip and clip.get("clip_weights") == "random"
    caption = (f"{caption_prefix(temporal)} Temporal consistency. E_warp: squared RGB distance in [0, 1] between frame "
               f"t+1 and frame t warped onto it, over non-occluded pixels, x1000 (lower is better), optical flow from "
               f"the original video: {temporal.get('flow', '?')} (paper: {p3['flow']}). CLIP score: 100 x cos(frame, "
               f"target prompt); directional: cos of image change vs text change. {clip_note}"
               + (" (random weights: its scores measure nothing)" if random_clip else "")
               + ". MOS is the paper's user study: shown from the paper, not reproduced.")
    notes = ["The paper states no value scale for its warp error; this run's scale puts original 512 px clips at "
             "0.16-0.34 (DIS flow), the paper's range. Warp error rewards blur and static output: read it beside "
             "Table 1."]
    columns = [Column("method", "method"), Column("measured", "measured"), *[metric_column(k.key) for k in shown],
               *[_paper_column(k) for k in published]]
    return Table(T3, "Table 3: temporal consistency", caption, columns, rows, notes)
