"""Where every stage of the DAG reads and writes (README "Data layout"), relative to the project root.

`DAG` is the layout of this checkout (paths relative to the working directory, as dvc.yaml runs the
stages); `Layout(root)` the same tree under another root (tests, a copied project). The stage CLIs take
these as their argument defaults, so a path is spelled once, here (and in dvc.yaml's commands).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

CROPS, META, TRACK = "crops", "meta.json", "track.npz"  # inside data/prepped/<vid>/
INVERSION_SUFFIX = ".safetensors"
BASE_SUBDIR = "base"  # data/inversions/base/<vid>.safetensors: base-model inversions for TokenFlow


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    def _p(self, *parts: str) -> Path:
        return Path(self.root, *parts)

    # ---------------------------------------------------------------- data
    @property
    def media(self) -> Path:
        return self._p("data", "media")

    @property
    def prepped(self) -> Path:
        return self._p("data", "prepped")

    @property
    def faces(self) -> Path:
        return self._p("data", "faces")

    @property
    def captions(self) -> Path:
        return self._p("data", "captions")

    @property
    def face_captions(self) -> Path:
        return self.captions / "faces.jsonl"

    @property
    def video_captions(self) -> Path:
        return self.captions / "videos.jsonl"

    @property
    def prompts(self) -> Path:
        return self._p("data", "prompts", "edits.yaml")

    @property
    def inversions(self) -> Path:
        return self._p("data", "inversions")

    @property
    def edits(self) -> Path:
        return self._p("data", "edits")

    @property
    def external_edits(self) -> Path:
        return self._p("data", "external_edits")

    @property
    def imported(self) -> Path:
        return self._p("data", "imported")

    @property
    def gallery(self) -> Path:
        return self._p("data", "gallery")

    # ---------------------------------------------------------------- models
    @property
    def models(self) -> Path:
        return self._p("models")

    @property
    def base_model(self) -> Path:
        return self.models / "base"

    @property
    def clip_model(self) -> Path:
        return self.models / "clip"

    @property
    def branches(self) -> Path:
        return self.models / "branches"

    def branch(self, name: str) -> Path:
        return self.branches / name

    def checkpoints(self, branch: str) -> Path:
        return self.models / "checkpoints" / branch

    # ---------------------------------------------------------------- reports
    @property
    def reports(self) -> Path:
        return self._p("reports")

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics"

    @property
    def timing(self) -> Path:
        return self.metrics / "timing.json"

    @property
    def tables(self) -> Path:
        return self.reports / "tables"

    @property
    def result_plots(self) -> Path:
        return self.reports / "plots" / "results"

    @property
    def side_by_side(self) -> Path:
        return self.reports / "videos"

    def training_curve(self, branch: str) -> Path:
        return self.reports / "train" / f"{branch}.tsv"

    # ---------------------------------------------------------------- items
    def inversion(self, vid: str, base: bool = False) -> Path:
        return inversion_path(self.inversions, vid, base)

    def edit(self, method: str, prompt: str, vid: str) -> Path:
        return edit_path(self.edits, method, prompt, vid)


DAG = Layout()


# ------------------------------------------------------------------------- items under any folder
def inversion_path(inversions: str | Path, vid: str, base: bool = False) -> Path:
    """<inversions>/<vid>.safetensors, or the base-model copy under <inversions>/base/."""
    folder = Path(inversions) / BASE_SUBDIR if base else Path(inversions)
    return folder / f"{vid}{INVERSION_SUFFIX}"


def edit_path(edits: str | Path, method: str, prompt: str, vid: str) -> Path:
    """<edits>/<method>/<prompt>/<vid>.mp4 (its JSON record beside it, same name)."""
    return Path(edits) / method / prompt / f"{vid}.mp4"


def record_path(output: str | Path) -> Path:
    """The JSON record written beside an output video."""
    return Path(output).with_suffix(".json")


# ------------------------------------------------------------------------- prepped videos
def is_prepped_video(folder: str | Path) -> bool:
    """A prepped video is a folder with crops/ and meta.json (prep_videos writes both atomically)."""
    folder = Path(folder)
    return (folder / CROPS).is_dir() and (folder / META).is_file()


def prepped_videos(prepped: str | Path, required: bool = True) -> list[str]:
    """Ids of the prepped videos under `prepped`, sorted. A visible sub-folder that is not a prepped
    video is half-written or foreign: an InputError, never skipped. None is an error when `required`."""
    prepped = Path(prepped)
    folders = sorted(p for p in prepped.iterdir() if p.is_dir() and not p.name.startswith(".")) if prepped.is_dir() else []
    for folder in folders:
        if not is_prepped_video(folder):
            raise InputError(folder, f"not a prepped video (expected {CROPS}/ and {META}; re-run prep_videos)")
    if not folders and required:
        raise InputError(prepped, f"no prepped videos (expected <vid>/{CROPS}/*.png and <vid>/{META}; run prep_videos)")
    return [p.name for p in folders]


def crops_dir(prepped: str | Path, vid: str) -> Path:
    return Path(prepped) / vid / CROPS


def meta_path(prepped: str | Path, vid: str) -> Path:
    return Path(prepped) / vid / META
