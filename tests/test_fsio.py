"""Atomic writes: all or nothing, normal permissions."""

from __future__ import annotations

import os
import stat

import pytest

from ipfacediff.fsio import atomic_dir, atomic_path, write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_on_success_with_umask_permissions(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{")
    mode = stat.S_IMODE(target.stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_swaps_whole_folder_and_keeps_old_on_failure(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    with atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]


def raw_metadata(path) -> dict:
    """The `__metadata__` of a safetensors file in the order its header bytes hold it."""
    import json

    raw = path.read_bytes()
    return json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]


def _safetensors_with_metadata_order(path, keys):
    """A valid safetensors file whose metadata keys are written in the given order (as the Rust writer
    may on any run), one float32 tensor 'w' = [1, 2, 3]."""
    import json
    import struct

    data = struct.pack("<3f", 1.0, 2.0, 3.0)
    meta = {k: f"value-{k}" for k in keys}
    header = json.dumps({"__metadata__": meta, "w": {"dtype": "F32", "shape": [3], "data_offsets": [0, len(data)]}},
                        separators=(",", ":")).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


def test_canonicalize_safetensors_makes_metadata_order_irrelevant(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ipfacediff.fsio import canonicalize_safetensors

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _safetensors_with_metadata_order(a, ["format", "lora_adapter_metadata", "b"])
    _safetensors_with_metadata_order(b, ["lora_adapter_metadata", "b", "format"])
    assert a.read_bytes() != b.read_bytes()
    for f in (a, b):
        canonicalize_safetensors(f)
    assert a.read_bytes() == b.read_bytes()
    assert load_file(str(a))["w"].tolist() == [1.0, 2.0, 3.0]
    with safe_open(str(a), "pt") as f:  # (its metadata() is a hash map again: order checked on the bytes)
        assert f.metadata() == {k: f"value-{k}" for k in ["format", "lora_adapter_metadata", "b"]}
    assert list(raw_metadata(a)) == sorted(["format", "lora_adapter_metadata", "b"])
    assert (int.from_bytes(a.read_bytes()[:8], "little") + 8) % 8 == 0  # data stays 8-byte aligned
