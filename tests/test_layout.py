"""One layout for the DAG's paths, one predicate for a prepped video."""

from __future__ import annotations

import json

import pytest
import yaml

from ipfacediff.config import ROOT
from ipfacediff.errors import InputError
from ipfacediff.layout import DAG, edit_path, inversion_path, is_prepped_video, prepped_videos


def _prepped(root, vid):
    (root / vid / "crops").mkdir(parents=True)
    (root / vid / "meta.json").write_text(json.dumps({"fps": "10/1", "frames": 0}))


def test_a_prepped_video_has_crops_and_meta(tmp_path):
    _prepped(tmp_path, "b")
    _prepped(tmp_path, "a")
    (tmp_path / ".tmp-c").mkdir()  # an atomic write in progress is not a video
    (tmp_path / "index.json").write_text("{}")
    assert prepped_videos(tmp_path) == ["a", "b"] and is_prepped_video(tmp_path / "a")
    (tmp_path / "half" / "crops").mkdir(parents=True)
    assert not is_prepped_video(tmp_path / "half")
    with pytest.raises(InputError, match=r"half: not a prepped video"):
        prepped_videos(tmp_path)


def test_no_prepped_videos_is_an_error_only_when_required(tmp_path):
    assert prepped_videos(tmp_path / "absent", required=False) == []
    with pytest.raises(InputError, match="no prepped videos"):
        prepped_videos(tmp_path / "absent")


def test_layout_paths_are_the_dvc_stage_outputs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def outs(name):
        return {next(iter(o)) if isinstance(o, dict) else o for o in stages[name]["outs"]}

    assert str(DAG.media) in outs("sample_media") and str(DAG.prepped) in outs("prep_videos")
    assert {str(DAG.base_model), str(DAG.clip_model)} == outs("models")
    assert str(DAG.branch("identity")) in outs("finetune_id") and str(DAG.checkpoints("identity")) in outs("finetune_id")
    assert str(DAG.inversions) in outs("invert") and str(DAG.timing) in outs("timing")
    assert str(DAG.edits / "${item.method}") in outs("edit") and str(DAG.imported) in outs("import_external")
    assert {str(DAG.tables), str(DAG.result_plots), str(DAG.side_by_side)} == outs("report")
    assert str(DAG.training_curve("identity")) in {next(iter(p)) for p in stages["finetune_id"]["plots"]}


def test_item_paths():
    assert edit_path("e", "ours", "glasses", "v").as_posix() == "e/ours/glasses/v.mp4"
    assert inversion_path("i", "v").as_posix() == "i/v.safetensors"
    assert inversion_path("i", "v", base=True).as_posix() == "i/base/v.safetensors"
