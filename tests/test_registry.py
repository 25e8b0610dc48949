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
