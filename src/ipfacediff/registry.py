"""Registries: the single source for the editing methods, the external baselines and the metric columns.

Everything that lists methods derives from `METHODS` / `BASELINES`: the `edit.methods` default
(settings.EditSettings, conf/config.yaml, checked by a test), the DVC edit matrix (`${edit.methods}`),
`ipfacediff edit --method` choices, the metrics' and report tables' row order and labels, and the
identity-over-time plot's lines in dvc.yaml (checked by a test). `METRICS` names every measured
column of the report tables: its key in the metrics JSON, header, digits, direction and the key of
the paper's value beside it (src/ipfacediff/data/paper_numbers.yaml).

Adding a method or a metric column: one entry below plus its implementation and test; see README
"Architecture".
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Method:
    """An editing method of the paper's tables: which branch runs the source pass (the original video:
    correspondences and injected features) and the edit pass, whether PnP injection runs, and whether
    joint keyframe attention + propagation runs. "base" means the base weights (no adapter)."""

    name: str
    source_branch: str  # "identity" | "base"
    edit_branch: str  # "directional" | "base"
    inject: bool  # PnP identity guidance (q/k + resblock features)
    propagate: bool  # joint keyframe attention + nearest-neighbour propagation
    description: str
    label: str = ""  # how tables name it ("" -> the name)
    order: int = 0  # row order in tables (ours first, ablations, then baselines)
    short: str = ""  # column-header name in the time table ("" -> the name)

    @property
    def branches(self) -> set[str]:
        """The fine-tuned branches this method loads (the base weights need none)."""
        return {self.source_branch, self.edit_branch} - {"base"}


@dataclass(frozen=True)
class Baseline:
    """A published method whose outputs are imported (metrics.external_methods), never run here."""

    name: str
    label: str
    order: int
    short: str = ""


def _methods(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in sorted(methods, key=lambda m: m.order)}


METHODS: dict[str, Method] = _methods(
    Method("ours", "identity", "directional", True, True,
           "identity-branch source pass, directional-branch edit, identity guidance, keyframe propagation",
           "IP-FaceDiff (ours, with ID guidance)", 0, "ours"),
    Method("no_id_guidance", "identity", "directional", False, True,
           "as ours without identity guidance (no PnP injection)", "IP-FaceDiff w/o ID guidance", 10),
    Method("no_directional", "identity", "base", True, True,
           "as ours with the base weights in place of the directional branch", "no_directional", 20),
    Method("tokenflow", "base", "base", True, True,
           "TokenFlow: base model for both passes, PnP injection and keyframe propagation", "tokenflow", 30),
    Method("per_frame", "identity", "directional", True, False,
           "PnP per frame with ours' branches: no joint attention, no propagation", "per_frame", 40),
)

BASELINES: dict[str, Baseline] = {
    b.name: b for b in (
        Baseline("dva", "DVA (Kim et al., CVPR 2023)", 100, "DVA"),
        Baseline("stit", "STIT (Tzaban et al., 2022)", 110, "STIT"),
        Baseline("ltfe", "LTFE (Yao et al., ICCV 2021)", 120, "LTFE"),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(None, f"unknown edit method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


def method_names() -> list[str]:
    """Engine methods in table order (the `edit.methods` default and the CLI's choices)."""
    return list(METHODS)


def _entry(name: str) -> Method | Baseline | None:
    return METHODS.get(name) or BASELINES.get(name)


def method_label(name: str) -> str:
    entry = _entry(name)
    return (entry.label or entry.name) if entry else name


def method_order(methods: list[str]) -> list[str]:
    """Ours first, then ablations, then baselines (registry order); unknown names alphabetically after."""
    methods = list(dict.fromkeys(methods))
    known = sorted((m for m in methods if _entry(m)), key=lambda m: _entry(m).order)
    return known + sorted(m for m in methods if not _entry(m))


def method_short(name: str) -> str:
    entry = _entry(name)
    return (entry.short or entry.name) if entry else name


# ------------------------------------------------------------------------------------- metrics
ARROWS = {"lower": "↓", "higher": "↑", None: ""}


@dataclass(frozen=True)
class Metric:
    """One measured column of a report table."""

    key: str  # field of a method's entry in the metrics JSON (reports/metrics/<source>.json)
    table: str  # table1_identity | table2_time | table3_temporal
    source: str  # identity | temporal | clip | timing (the stage's output) | derived | paper (published only)
    label: str  # column header, without the direction arrow
    digits: int = 3  # decimals shown (Markdown/LaTeX; the CSV keeps full precision)
    direction: str | None = None  # lower | higher (better), or None: shown as an arrow when `arrow`
    paper_key: str | None = None  # the paper's value of this metric in paper_numbers.yaml rows
    paper_label: str | None = None  # header of the paper's column (default "paper <label>")
    arrow: bool = True  # put the direction arrow in the header
    help: str = ""
    field: str = ""  # key in the metrics JSON when it differs from `key` (registry keys are unique)

    @property
    def json_key(self) -> str:
        return self.field or self.key

    @property
    def header(self) -> str:
        return f"{self.label} {ARROWS[self.direction]}".strip() if self.arrow else self.label

    @property
    def paper_header(self) -> str:
        label = self.paper_label or f"paper {self.label}"
        return f"{label} {ARROWS[self.direction]}".strip() if self.arrow else label


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        # Table 1: identity (metrics_identity -> identity.json, per method and recogniser)
        Metric(
            "cosine_distance",
            "table1_identity",
            "identity",
            "cosine dist",
            3,
            "lower",
            "cosine_distance",
            "paper cosine",
            help="1 - cos of the unit mean-frame video embeddings, original vs edited",
        ),
        Metric("r_at_1", "table1_identity", "identity", "R@1", 3, "higher", "r_at_1", help="original ranked first among the gallery"),
        Metric("mrr", "table1_identity", "identity", "MRR", 3, "higher", "mrr", help="mean reciprocal rank of the original"),
        Metric(
            "tl_id", "table1_identity", "identity", "TL-ID", 3, "higher", arrow=False, help="STIT's adjacent-frame identity consistency"
        ),
        Metric("tg_id", "table1_identity", "identity", "TG-ID", 3, "higher", arrow=False, help="STIT's all-pair identity consistency"),
        Metric("videos", "table1_identity", "identity", "videos", 0, help="edited videos measured"),
        # Table 3: temporal consistency and CLIP (metrics_temporal / metrics_clip)
        Metric("warp_error", "table3_temporal", "temporal", "E_warp", 3, "lower", "warp_error", help="Lai et al.'s warp error x1000"),
        Metric("warp_error_std", "table3_temporal", "temporal", "± std", 3, help="spread of E_warp over videos"),
        Metric("temporal_videos", "table3_temporal", "temporal", "videos", 0, help="edited videos measured", field="videos"),
        Metric("clip_score", "table3_temporal", "clip", "CLIP score", 2, "higher", arrow=False, help="100 x cos(frame, target prompt)"),
        Metric(
            "directional_clip",
            "table3_temporal",
            "clip",
            "directional CLIP",
            3,
            "higher",
            arrow=False,
            help="cos of the image change vs the text change",
        ),
        Metric("mos", "table3_temporal", "paper", "MOS", 1, "higher", "mos", "paper MOS", help="the paper's user study (not reproduced)"),
        # Table 2: time against video length (timing stage)
        Metric("invert_s", "table2_time", "timing", "invert s", 2, "lower", arrow=False, help="DDIM inversion wall time"),
        Metric("edit_s", "table2_time", "timing", "edit s", 2, "lower", arrow=False, help="editing wall time"),
        Metric("total_s", "table2_time", "timing", "total s", 2, "lower", arrow=False, help="inversion + editing"),
        Metric("s_per_frame", "table2_time", "derived", "s/frame", 3, "lower", arrow=False, help="total s / frames"),
        Metric(
            "peak_mem_mb", "table2_time", "timing", "peak MB", 0, "lower", arrow=False, help="peak memory above the level before the phase"
        ),
    )
}


def table_metrics(table: str) -> list[Metric]:
    """The registered metric columns of one report table, in registry order."""
    return [m for m in METRICS.values() if m.table == table]
