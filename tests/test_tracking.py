"""W&B tracking: experiment groups, run names, artifact lineage, edit videos; the suite writes no runs."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ipfacediff import tracking


class FakeRun:
    """Records what a wandb run was asked to do (wandb.init is replaced by this)."""

    def __init__(self, **kwargs):
        self.init = kwargs
        self.logged, self.used, self.produced, self.finished = [], [], [], False
        self.summary = {}

    def log(self, data, step=None):
        self.logged.append(data)

    def use_artifact(self, art):
        self.used.append(art)

    def log_artifact(self, art):
        self.produced.append(art)

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    import wandb

    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(FakeRun(**kw)) or runs[-1])
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    return runs


def test_the_suite_runs_with_wandb_disabled():
    # conftest forces it before any test: no test, fixture or stage subprocess writes a run
    assert os.environ["WANDB_MODE"] == "disabled"
    with tracking.start_run("models", {"profile": "sample"}) as run:
        assert not run.enabled


def test_groups_are_per_experiment_and_runs_named_by_stage_method_prompt(fake_wandb, monkeypatch):
    params = {"profile": "sample", "edit": {"guidance_scale": 7.5}}
    other = {"profile": "sample", "edit": {"guidance_scale": 5}}
    with tracking.start_run("edit", params, method="ours"):
        pass
    with tracking.start_run("finetune_id", params):
        pass
    with tracking.start_run("edit", other, method="tokenflow", prompt="bangs"):
        pass
    a, b, c = fake_wandb
    assert a.init["group"] == b.init["group"] != c.init["group"]  # one group per configuration
    assert [r.init["name"] for r in fake_wandb] == ["edit-ours", "finetune_id", "edit-tokenflow-bangs"]
    assert a.init["job_type"] == "edit" and all(r.finished for r in fake_wandb)
    monkeypatch.setenv("DVC_EXP_NAME", "sweep-gs5")  # `dvc exp run` names the experiment
    with tracking.start_run("edit", params, method="ours"):
        pass
    assert fake_wandb[-1].init["group"] == "sweep-gs5"


def test_artifacts_declare_lineage_and_only_on_success(fake_wandb, tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "w.safetensors").write_bytes(b"weights")
    (tmp_path / "branch").mkdir()
    (tmp_path / "branch" / "b.safetensors").write_bytes(b"branch")
    uses = {"models-base": ("model", tmp_path / "base")}
    produces = {"branch-identity": ("branch", tmp_path / "branch")}
    with tracking.start_run("finetune_id", {"profile": "sample"}, uses=uses, produces=produces):
        pass
    run = fake_wandb[-1]
    assert [(a.name, a.type) for a in run.used] == [("models-base", "model")]
    assert [(a.name, a.type) for a in run.produced] == [("branch-identity", "branch")]
    with pytest.raises(RuntimeError):
        with tracking.start_run("finetune_id", {"profile": "sample"}, uses=uses, produces=produces):
            raise RuntimeError("training crashed")
    assert fake_wandb[-1].produced == [] and fake_wandb[-1].finished


def test_offline_runs_record_their_inputs_in_the_config(fake_wandb, tmp_path):
    class Config(dict):
        def update(self, d, allow_val_change=False):
            super().update(d)

    (tmp_path / "base").mkdir()
    with tracking.start_run("invert", {"profile": "sample"}, uses={"models-base": ("model", tmp_path / "base")}) as run:
        run._run.offline, run._run.config = True, Config()
        run.use_artifact("branch-identity", "branch", tmp_path / "base")
    # (the `uses` of start_run went through use_artifact before the flag was set; this one is offline)
    assert run._run.config["inputs"] == {"branch-identity": {"type": "branch", "path": str(tmp_path / "base")}}


def test_edit_logged_as_video_and_side_by_side_frame(fake_wandb, tmp_path):
    from PIL import Image

    from ipfacediff.video import write_video

    rng = np.random.default_rng(0)
    edited = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "e.mp4", edited, 10)
    crops = tmp_path / "crops"
    crops.mkdir()
    for i in range(5):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(crops / f"{i:06d}.png")
    frame = tracking.side_by_side_frame(tmp_path / "e.mp4", crops)
    assert frame.shape == (32, 64, 3)
    assert (frame[:, :32] == 80).all()  # the original crop at the middle index (2) on the left
    with tracking.start_run("edit", {"profile": "sample"}, method="ours") as run:
        run.log_edit("edit/bangs/v1", tmp_path / "e.mp4", crops)
    logged = fake_wandb[-1].logged[-1]
    assert type(logged["edit/bangs/v1/video"]).__name__ == "Video"
    assert type(logged["edit/bangs/v1/side_by_side"]).__name__ == "Image"


def test_report_uses_the_artifacts_the_edit_stages_produce(tmp_path):
    """Lineage edit@<method> -> report: the report declares exactly the method folders present, under the
    names the edit stage logs them (tracking.edits_artifact)."""
    for method in ("ours", "tokenflow"):
        (tmp_path / "edits" / method).mkdir(parents=True)
    (tmp_path / "edits" / ".gitignore").write_text("*\n")
    uses = tracking.edits_inputs(tmp_path / "edits")
    assert uses == {"edits-ours": ("edits", tmp_path / "edits" / "ours"),
                    "edits-tokenflow": ("edits", tmp_path / "edits" / "tokenflow")}
    assert tracking.edits_artifact("ours") in uses
    assert tracking.edits_inputs(tmp_path / "missing") == {}


def test_caption_stage_logs_a_run_with_its_captions_and_artifact(fake_wandb, tmp_path, media_dir, monkeypatch):
    import importlib.util

    import yaml
    from test_caption import _aligned, _faces_dir, _prepped_dir, _read

    face = _aligned(_read(media_dir / "stills" / "skimage_astronaut.png"))
    faces, prepped = _faces_dir(tmp_path, {"astronaut": face}), _prepped_dir(tmp_path, [face])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profile": "test", "caption": {"captioner": "fallback"}}))
    spec = importlib.util.spec_from_file_location("caption_stage", tracking.Path(__file__).parents[1] / "stages" / "caption.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.chdir(tmp_path)
    assert stage.main(["--params", str(params), str(faces), str(prepped), str(tmp_path / "captions")]) == 0
    run = fake_wandb[-1]
    assert run.init["name"] == "caption" and run.init["job_type"] == "caption" and run.finished
    assert [(a.name, a.type) for a in run.produced] == [("captions", "captions")]
    table = run.logged[-1]["captions"]
    assert type(table).__name__ == "Table" and table.get_column("image") == ["images/astronaut.png"]
    assert run.summary["faces"] == 1
