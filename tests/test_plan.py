"""`ipfacediff plan`: job counts from the composed parameters and the FLOP arithmetic behind the estimate."""

from __future__ import annotations

import json
import math

import pytest

from ipfacediff import plan as P
from ipfacediff.cli import main as cli_main
from ipfacediff.config import compose
from ipfacediff.errors import InputError
from ipfacediff.prompts import load_edit_prompts


def test_paper_profile_counts_are_the_papers():
    params = compose(["profile=paper"])
    p = P.make_plan(params)
    n_prompts = len(load_edit_prompts())
    lines = {line.what: line for line in p.lines}
    assert (p.videos, p.frames_per_video) == (50, 40)  # 50 CelebV-HQ clips, 4 s at 10 fps
    assert lines["edit"].count == 50 * n_prompts * 5  # `prompts: all`: every prompt x 5 methods x 50 clips
    assert lines["invert"].count == 100  # identity-branch caches + base-model caches for TokenFlow
    assert lines["train identity branch"].count == lines["train directional branch"].count == 30000
    # one 512 px edit frame-step is 3 UNet forwards of 0.804 TFLOP (REFERENCE section 9) + attention
    k = math.ceil(40 / 8)
    per_edit = 50 * (3 * 40 * 0.804 + 2.45e11 * k * k / 1e12)
    assert lines["edit"].tflop == pytest.approx(lines["edit"].count * per_edit, rel=1e-12)
    assert lines["edit"].gpu_hours == pytest.approx(lines["edit"].tflop / (989 * 0.4) / 3600, rel=1e-12)
    assert p.total_gpu_hours == pytest.approx(sum(x.gpu_hours for x in p.lines))


def test_estimate_matches_the_papers_measured_speed_within_a_factor_of_two():
    """300 frames, 50 steps, A100 peak at 40%: the FLOP model gives a rate near the paper's measured
    0.83 frames/s (REFERENCE section 9). A factor of 2 either way is what the utilisation guess allows."""
    tflop = P.edit_tflop(300, 50, 512, 8)
    frames_per_s = 300 / (tflop / (312 * 0.4))
    assert 0.83 / 2 < frames_per_s < 0.83 * 2


def test_overrides_change_the_counts_and_scale_with_size():
    small = P.make_plan(compose(["profile=paper", "edit.prompts=[glasses,old]", "data.n_eval_videos=3", "edit.methods=[ours]"]))
    edit = next(x for x in small.lines if x.what == "edit")
    assert edit.count == 3 * 2 * 1
    inv = next(x for x in small.lines if x.what == "invert")
    assert inv.count == 3  # no tokenflow: no base-model caches
    half = P.make_plan(compose(["profile=paper", "data.crop_size=256"]))
    full = P.make_plan(compose(["profile=paper"]))
    inv_half, inv_full = (next(x for x in q.lines if x.what == "invert").tflop for q in (half, full))
    assert inv_half == pytest.approx(inv_full / 4)  # UNet cost scales with the latent area


def test_cli_json_and_bad_input(capsys):
    assert cli_main(["plan", "profile=paper", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["estimate"] is True and out["profile"] == "paper" and out["total_gpu_hours"] > 0
    assert cli_main(["plan", "profile=paper"]) == 0
    assert "ESTIMATE" in capsys.readouterr().out
    assert cli_main(["plan", "profile=paper", "--utilisation", "2"]) == 2
    assert "--utilisation" in capsys.readouterr().err
    assert cli_main(["plan", "profile=paper", "data.max_seconds=null"]) == 2
    assert "--frames" in capsys.readouterr().err
    with pytest.raises(InputError, match="unknown"):
        P.make_plan(compose(["profile=paper", "edit.prompts=[no_such_prompt]"]))


def test_long_videos_are_costed_as_the_editor_runs_them():
    """The planner resolves exact vs bounded keyframe attention with the editor's own rule: the paper's
    300 frames fit the 8 GiB budget (exact, K^2 pairs); 1200 frames do not (bounded: groups of 16
    attending to themselves + 4 anchors, plus the anchor pass), so work per frame stays flat."""
    edit = compose(["profile=paper"])["edit"]
    assert P.keyframe_groups(300, 8, 512, edit) == [38]
    assert P.keyframe_groups(1200, 8, 512, edit) == [16] * 9 + [6]
    exact_1200 = P.keyframe_attention_tflop(1200, 8, 512)  # no settings: exact
    assert exact_1200 == pytest.approx(2.45e11 * 150**2 / 1e12)
    bounded = P.keyframe_attention_tflop(1200, 8, 512, edit)
    assert bounded == pytest.approx(2.45e11 * (9 * 16 * 20 + 6 * 10 + 4 * 4) / 1e12)
    per_frame = [P.edit_tflop(n, 50, 512, 8, {**edit, "keyframe_attention": "bounded"}) / n for n in (300, 1200)]
    assert per_frame[1] <= 1.05 * per_frame[0]
    assert P.edit_tflop(1200, 50, 512, 8) / 1200 > 1.5 * per_frame[1]  # exact attention outgrows the UNet
