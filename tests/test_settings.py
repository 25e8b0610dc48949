"""The typed settings tree: defaults equal conf/, validation names the file and key, and the edit
fingerprint hashes only output-affecting settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ipfacediff.config import compose, dump
from ipfacediff.errors import InputError
from ipfacediff.settings import EditSettings, Settings, load_settings, settings_from_dict


@pytest.fixture(scope="module")
def sample_params() -> dict:
    return compose()


def test_dataclass_defaults_equal_conf_config_yaml():
    """conf/config.yaml without a profile is exactly Settings() (profile names the default profile)."""
    defaults = dataclasses.asdict(Settings())
    assert yaml.safe_load(Path(compose.__globals__["CONF_DIR"], "config.yaml").read_text())["defaults"][-1] == {
        "profile": defaults.pop("profile")}
    assert compose(["~profile"]) == defaults


@pytest.mark.parametrize("profile", ["sample", "paper"])
def test_every_profile_loads_into_the_typed_tree(profile, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(dump(compose([f"profile={profile}"])))
    s = load_settings(path)
    assert s.profile == profile and isinstance(s.finetune_dir.lambda1, float)
    assert dataclasses.asdict(s) == compose([f"profile={profile}"])  # nothing dropped, nothing added


def test_trainer_keys_are_composed_once_into_both_branches(sample_params):
    p = sample_params
    shared = {f.name for f in dataclasses.fields(Settings().finetune_id.__class__.__mro__[1])}
    assert {k: p["finetune_id"][k] for k in shared} == {k: p["finetune_dir"][k] for k in shared}


@pytest.mark.parametrize("change, match", [
    ({"edit": {"atn_chunk": 1}}, r"params.yaml: section 'edit': unknown key\(s\) atn_chunk"),
    ({"typo_section": 1}, r"params.yaml: top level: unknown key\(s\) typo_section"),
    ({"edit": {"steps": "ten"}}, r"params.yaml: edit.steps: 'ten' is not a valid int"),
    ({"data": {"min_face_px": True}}, r"data.min_face_px: True is not a valid"),
    ({"device": "tpu"}, r"params.yaml: top level: device 'tpu'"),
    ({"edit": {"methods": ["ours", "nope"]}}, r"params.yaml: unknown edit method 'nope'"),
    ({"finetune_id": {"mode": "half"}}, r"params.yaml: section 'finetune_id': mode 'half'"),
    ({"timing": {"frames": []}}, r"section 'timing': frames"),
])
def test_bad_values_are_one_line_errors_naming_file_and_key(sample_params, tmp_path, change, match):
    params = json.loads(json.dumps(sample_params))
    for k, v in change.items():
        params[k] = {**params[k], **v} if isinstance(v, dict) and k in params else v
    path = tmp_path / "params.yaml"
    path.write_text(dump(params))
    with pytest.raises(InputError, match=match) as e:
        load_settings(path)
    assert "\n" not in str(e.value)


def test_int_is_accepted_where_a_float_is_expected():
    s = settings_from_dict({"edit": {"guidance_scale": 5}})
    assert s.edit.guidance_scale == 5 and s.edit.steps == EditSettings().steps


# ------------------------------------------------------------------------------ the edit fingerprint
def _record(edit: EditSettings) -> dict:
    from ipfacediff.editing.jobs import EditJob, job_record
    from ipfacediff.prompts import EditPrompt
    from ipfacediff.registry import get_method

    job = EditJob("v", "10/1", 4, Path("v.safetensors"), EditPrompt("glasses", "accessory", "a person wearing glasses", "a person"),
                  get_method("ours"), Path("out/ours/glasses/v.mp4"))
    cache = SimpleNamespace(path=job.inversion, data_sha256="d", steps=10, prompt="a person", meta={"branch": "base"})
    return job_record(job, cache, edit, seed=0, profile="sample", models_info={"sha256": "m"})


def test_runtime_settings_and_the_prompt_list_do_not_stale_finished_edits():
    base = _record(EditSettings())["fingerprint"]
    for runtime in ({"attn_chunk": 17}, {"batch_size": 3}, {"attention_slicing": "max"}, {"vae_slicing": False},
                    {"prompts": ["glasses", "old", "bangs"]}, {"methods": ["ours"]}):
        assert _record(EditSettings(**runtime))["fingerprint"] == base, runtime
    for output in ({"guidance_scale": 5.0}, {"steps": 11}, {"keyframe_interval": 4}, {"pnp_attn_t": 0.4},
                   {"negative_prompt": ""}, {"vae_tiling": True}):
        assert _record(EditSettings(**output))["fingerprint"] != base, output


def test_the_record_keeps_runtime_settings_apart_from_the_hashed_config():
    rec = _record(EditSettings(attn_chunk=17))
    assert "attn_chunk" not in rec["config"] and rec["runtime"]["attn_chunk"] == 17
    assert json.loads(json.dumps(rec, default=str))["config"]["steps"] == EditSettings().steps
