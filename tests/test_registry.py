"""The method registry is the single source: conf/, dvc.yaml, the CLI, the stage and the metrics'
row order derive from it; a throwaway method shows that adding one touches only the registry."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import yaml

from ipfacediff import registry
from ipfacediff.config import CONF_DIR, ROOT
from ipfacediff.errors import InputError
from ipfacediff.settings import EditSettings


def test_conf_and_settings_list_the_registry_methods_in_table_order():
    conf = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    assert conf["edit"]["methods"] == registry.method_names() == EditSettings().methods
    assert [m.order for m in registry.METHODS.values()] == sorted(m.order for m in registry.METHODS.values())


def test_dvc_edit_matrix_is_the_configured_method_list():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert dvc["stages"]["edit"]["matrix"]["method"] == "${edit.methods}"


def test_external_baselines_are_registered_and_ordered_after_the_engine_methods():
    conf = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    assert set(conf["metrics"]["external_methods"]) <= set(registry.BASELINES)
    assert registry.method_order(["ltfe", "zz", "tokenflow", "ours", "dva", "ours"]) == ["ours", "tokenflow", "dva", "ltfe", "zz"]


def _cli_choices() -> list[str]:
    from ipfacediff.cli import edit as cli_edit

    ap = argparse.ArgumentParser()
    cli_edit.register(ap.add_subparsers())
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices["edit"]
    return next(a for a in sub._actions if a.dest == "method").choices


@pytest.fixture
def throwaway_method(monkeypatch):
    """A new method: one registry entry, nothing else touched."""
    m = registry.Method("no_propagation_base", "base", "directional", False, False, "test-only method", "Throwaway", 45)
    monkeypatch.setitem(registry.METHODS, m.name, m)
    return m


def test_a_registered_method_reaches_cli_settings_stage_matrix_and_metrics(throwaway_method, tmp_path):
    from ipfacediff.editing import plan_edits
    from ipfacediff.prompts import EditPrompt

    name = throwaway_method.name
    assert name in _cli_choices()
    assert EditSettings(methods=[name]).methods == [name]  # accepted by validation
    assert registry.method_order([name, "per_frame", "ours", "dva"]) == ["ours", "per_frame", name, "dva"]
    assert registry.method_label(name) == "Throwaway" and throwaway_method.branches == {"directional"}
    vid = tmp_path / "prepped" / "v"
    (vid / "crops").mkdir(parents=True)
    (vid / "meta.json").write_text(json.dumps({"fps": "10/1", "frames": 3}))
    jobs = plan_edits(tmp_path / "prepped", tmp_path / "inv", tmp_path / "edits", throwaway_method,
                      [EditPrompt("glasses", "accessory", "a person wearing glasses", "a person")])
    assert [j.output for j in jobs] == [tmp_path / "edits" / name / "glasses" / "v.mp4"]
    assert jobs[0].inversion == tmp_path / "inv" / "v.safetensors"


def test_every_method_is_a_valid_branch_choice():
    from ipfacediff.diffusion.branches import BRANCHES

    for m in registry.METHODS.values():
        assert m.source_branch in ("identity", "base") and m.edit_branch in ("directional", "base")
        assert m.branches <= set(BRANCHES)
        assert dataclasses.asdict(m)["name"] == m.name


# ------------------------------------------------------------------------------------------ metrics
def test_dvc_plots_are_the_registered_series():
    from ipfacediff.report.plots import PAPER_TIME_METHODS, TIME_SERIES

    plots = {next(iter(p)): next(iter(p.values())) for p in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
             if isinstance(p, dict)}
    assert plots["identity_over_time"]["y"]["reports/plots/results/identity_over_time.csv"] == registry.method_names()
    assert plots["time_vs_frames"]["y"]["reports/plots/results/time_vs_frames.csv"] == TIME_SERIES
    assert set(TIME_SERIES) <= {m.key for m in registry.table_metrics("table2_time") if m.source == "timing"}
    assert plots["time_vs_frames_paper"]["y"]["reports/plots/results/time_vs_frames_paper.csv"] == [
        f"{m}_min" for m in PAPER_TIME_METHODS]
    assert PAPER_TIME_METHODS == ["ours", *registry.BASELINES]


def test_metric_headers_show_their_direction_and_paper_keys_exist():
    from ipfacediff.report.tables import load_paper_numbers

    paper = load_paper_numbers()
    for m in registry.METRICS.values():
        if m.arrow and m.direction:
            assert m.header.endswith(registry.ARROWS[m.direction]), m.key
        if m.paper_key:
            rows = list(paper[m.table]["rows"].values())
            if m.table == "table1_identity":  # method -> recogniser -> values
                rows = [v for r in rows for v in (r or {}).values()]
            assert any(m.paper_key in (r or {}) for r in rows), m.key


def test_a_registered_metric_column_reaches_the_report_table(monkeypatch):
    """A new metric: one registry entry (plus the metrics code writing it); the table picks it up by name."""
    from ipfacediff.report.tables import load_paper_numbers, table1, table3, to_csv, to_markdown

    monkeypatch.setitem(registry.METRICS, "sharpness", registry.Metric(
        "sharpness", "table3_temporal", "temporal", "sharpness", 1, "higher", help="test-only column"))
    monkeypatch.setitem(registry.METRICS, "id_margin", registry.Metric(
        "id_margin", "table1_identity", "identity", "ID margin", 2, "higher", help="test-only column"))
    paper = load_paper_numbers()
    temporal = {"profile": "sample", "flow": "DIS", "original_reference": {"warp_error": 0.1, "videos": 1},
                "methods": {"ours": {"origin": "engine", "warp_error": 0.3, "warp_error_std": 0.1, "videos": 2, "sharpness": 12.345}}}
    t3 = table3(temporal, None, paper)
    assert "sharpness ↑" in t3.header and t3.header.index("sharpness ↑") < t3.header.index("paper E_warp ↓")
    assert "| 12.3 |" in to_markdown(t3) and "12.345" in to_csv(t3)
    ours = next(r for r in t3.rows if r["method"] == registry.method_label("ours"))
    assert ours["warp_error"] == 0.3 and ours["paper_warp_error"] == 0.238  # later columns keep their values
    identity = {"profile": "sample", "recognizers": [{"name": "sface", "network": "SFace", "weights_sha256": "a" * 64}],
                "gallery": {}, "methods": {"ours": {"origin": "engine", "sface": {"cosine_distance": 0.2, "id_margin": 0.456}}}}
    t1 = table1(identity, paper)
    assert "ID margin ↑" in t1.header and "| 0.46 |" in to_markdown(t1)


# ------------------------------------------------------------------------------------- recognisers
def test_a_registered_metrics_recogniser_is_loaded_by_name(monkeypatch, tmp_path):
    """A new metrics recogniser: a Recognizer subclass + one BACKENDS entry; `metrics.recognizers` selects it."""
    import numpy as np

    from ipfacediff import recognition
    from ipfacediff.metrics.evaluate import load_recognizers
    from ipfacediff.settings import MetricsSettings

    weights = tmp_path / "toy.bin"
    weights.write_bytes(b"toy weights")

    class MeanColour(recognition.Recognizer):
        name, network, input_size, dim = "mean_colour", "mean RGB (test)", 16, 3
        template = np.array([[5, 6], [11, 6], [8, 9], [6, 12], [10, 12]], np.float64)

        def __init__(self, weights_path=None):
            self.weights_path = weights

        def _forward(self, faces):
            return faces.reshape(len(faces), -1, 3).mean(axis=1) + 1.0

    monkeypatch.setitem(recognition.BACKENDS, "mean_colour", (None, MeanColour, True))
    (rec,) = load_recognizers(MetricsSettings(recognizers=["mean_colour"]))
    emb = rec.embed(np.full((2, 16, 16, 3), 7, np.uint8))
    assert isinstance(rec, MeanColour) and emb.shape == (2, 3) and np.allclose(np.linalg.norm(emb, axis=1), 1)
    assert rec.info()["name"] == "mean_colour"


def test_a_registered_torch_recogniser_serves_the_metrics_and_the_loss(monkeypatch, tmp_path):
    """A recogniser with a torch network: a TorchRecognizer subclass (its frozen core) + one BACKENDS entry.
    `metrics.recognizers` and `finetune_id.recognizer` both select it, and both run the same module."""
    import numpy as np
    import torch

    from ipfacediff import recognition
    from ipfacediff.metrics.evaluate import load_recognizers
    from ipfacediff.recognition.templates import ARCFACE_112
    from ipfacediff.settings import MetricsSettings
    from ipfacediff.train import identity_net

    weights = tmp_path / "toy.pt"
    weights.write_bytes(b"toy weights")

    class ToyPooling(recognition.TorchRecognizer):
        name, network, input_size, dim = "toy", "conv + pooling (test)", 112, 48
        template = ARCFACE_112

        def __init__(self, weights_path=None):
            self.weights_path = weights
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
            self.core = recognition.FaceRecognizer(net, "toy pooling", input_0_255=False)

    monkeypatch.setitem(recognition.BACKENDS, "toy", (None, ToyPooling, True))
    core = identity_net.load_recognizer("toy")
    x = torch.rand(2, 3, 112, 112, requires_grad=True) * 2 - 1
    core(x).sum().backward()  # differentiable end to end
    assert core(x).shape == (2, 48) and core.name == "toy pooling"
    (rec,) = load_recognizers(MetricsSettings(recognizers=["toy"]))
    assert rec.core is core  # one network: the loss's module is the one the metrics run
    faces = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    with torch.no_grad():
        want = core(torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy()
    # the adapter maps uint8 straight to [-1, 1] ((u - 127.5) / 127.5, vs u / 127.5 - 1 here): float32
    # rounding of values <= 1 through one 1x1 conv and a mean, ~1e-7; 1e-5 leaves room for summation order
    np.testing.assert_allclose(rec.embed(faces), want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)
    with pytest.raises(InputError, match="unknown recogniser 'nope'; expected one of sface, cosface, arcface, toy"):
        identity_net.load_recognizer("nope")
    with pytest.raises(InputError, match="unknown recogniser 'dlib'"):  # no torch core: not a loss recogniser
        identity_net.load_recognizer("dlib")
