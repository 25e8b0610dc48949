"""The TokenFlow baseline's source pass uses the base model, so it must read a base-model inversion."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ipfacediff.diffusion.branches import BranchSet
from ipfacediff.editing import check_inversion as _check_cache
from ipfacediff.editing import source_inversion as _cache_path
from ipfacediff.layout import BASE_SUBDIR
from ipfacediff.registry import get_method
from ipfacediff.errors import InputError


def _cache(branch: str, path="x.safetensors"):
    return SimpleNamespace(n_frames=4, path=path, meta={"model_sha256": "m", "branch": branch})


def test_base_methods_read_the_base_cache_when_there_is_one(tmp_path):
    (tmp_path / BASE_SUBDIR).mkdir()
    (tmp_path / "v.safetensors").write_bytes(b"")
    assert _cache_path(tmp_path, "v", get_method("tokenflow")) == tmp_path / "v.safetensors"
    (tmp_path / BASE_SUBDIR / "v.safetensors").write_bytes(b"")
    assert _cache_path(tmp_path, "v", get_method("tokenflow")) == tmp_path / BASE_SUBDIR / "v.safetensors"
    assert _cache_path(tmp_path, "v", get_method("ours")) == tmp_path / "v.safetensors"


def test_cache_branch_must_match_the_methods_source_pass():
    comps = SimpleNamespace(model_hash="m")
    base_only = BranchSet(base=None, sources={"identity": "base"})
    _check_cache(_cache("base"), 4, comps, base_only, get_method("tokenflow"))
    _check_cache(_cache("base"), 4, comps, base_only, get_method("ours"))  # identity branch is the base
    with pytest.raises(InputError, match="base model"):
        _check_cache(_cache("lora:abc"), 4, comps, base_only, get_method("tokenflow"))
    with pytest.raises(InputError, match="another identity branch"):
        _check_cache(_cache("lora:abc"), 4, comps, base_only, get_method("ours"))
    with pytest.raises(InputError, match="frames"):
        _check_cache(_cache("base"), 5, comps, base_only, get_method("tokenflow"))
