"""Parameters: conf/ is the single source, params.yaml its composition, profiles carry the paper's values."""

from __future__ import annotations

import dataclasses

import pytest

from ipfacediff import config
from ipfacediff.errors import InputError
from ipfacediff.settings import build_section


def test_params_yaml_is_the_composition_of_conf():
    assert config.main(["--check"]) == 0, "params.yaml drifted from conf/: run python -m ipfacediff.config --write"


def test_sample_is_the_default_profile():
    params = config.compose()
    assert params["profile"] == "sample"
    assert params["models"]["source"] == "tiny"


def test_paper_profile_has_the_papers_settings():
    p = config.compose(["profile=paper"])
    assert p["profile"] == "paper"
    assert p["data"]["crop_size"] == 512
    assert (p["data"]["fps"], p["data"]["max_seconds"], p["data"]["n_eval_videos"]) == (10, 4.0, 50)
    assert p["data"]["n_train_faces"] == 10000
    for branch in ("finetune_id", "finetune_dir"):
        assert (p[branch]["steps"], p[branch]["batch_size"]) == (30000, 16)
    assert (p["finetune_dir"]["lambda1"], p["finetune_dir"]["lambda2"]) == (0.3, 0.7)
    assert (p["edit"]["steps"], p["edit"]["guidance_scale"], p["edit"]["keyframe_interval"]) == (50, 7.5, 8)
    assert (p["edit"]["pnp_attn_t"], p["edit"]["pnp_f_t"]) == (0.5, 0.8)
    assert p["models"]["pretrained"] == "stabilityai/stable-diffusion-2-1-base"


def test_a_single_override_changes_only_that_value():
    base, changed = config.compose(), config.compose(["edit.guidance_scale=5"])
    assert changed["edit"]["guidance_scale"] == 5
    changed["edit"]["guidance_scale"] = base["edit"]["guidance_scale"]
    assert changed == base


@dataclasses.dataclass
class _Section:
    a: int = 1
    b: str = "x"


def test_build_section_builds_typed_config_and_rejects_unknown_keys():
    assert build_section(_Section, {"a": 3}, "s") == _Section(a=3, b="x")
    with pytest.raises(InputError, match=r"params.yaml: section 's': unknown key\(s\) typo"):
        build_section(_Section, {"a": 3, "typo": 1}, "s")


def test_load_params_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InputError, match="nope.yaml"):
        config.load_params(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(InputError, match="bad.yaml: not valid YAML"):
        config.load_params(bad)
