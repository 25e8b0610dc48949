"""benchmarks/gpu_check.py runs end to end on the CPU with the tiny models (the GPU command is the same)."""

from __future__ import annotations

import json

import pytest

from scripts import load_script


def _load():
    return load_script("benchmarks/gpu_check.py")


@pytest.mark.slow
def test_gpu_check_on_cpu_with_tiny_models(tmp_path):
    out = tmp_path / "check.json"
    assert _load().main(["--arch", "tiny", "--device", "cpu", "--dtype", "float32", "--frames", "9", "17", "--steps", "2",
                         "--extrapolate-to", "4", "--keyframe-attention", "bounded", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["frames"] for r in res["rows"]] == [9, 17]
    assert res["sdpa"]["kernel"] == "flash_for_cpu" and res["sdpa"]["memory_efficient"] and res["sdpa"]["dtype"] == "float32"
    for row in res["rows"]:
        assert len(row["edit_per_step_s"]) == 2 and row["invert_s"] > 0 and row["decode_s"] > 0
        # 2-3 keyframes fit one group of 16: bounded requested, exact used, and the record says why
        assert row["keyframe_attention"]["requested"] == "bounded" and row["keyframe_attention"]["used"] == "exact"
        assert set(row["pass_s_per_step"]) == {"keyframe_pass", "propagation_pass"}
        assert all(len(v) == 2 for v in row["pass_s_per_step"].values())
        assert row["peak_gib"]["invert"] is None  # no CUDA allocator on the CPU
        ex = row["extrapolated_4_steps"]
        assert ex["edit_s"] >= sum(row["edit_per_step_s"]) * 0.99 and ex["invert_s"] == round(row["invert_s"] * 2, 1)
