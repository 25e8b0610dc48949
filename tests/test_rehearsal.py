"""The researcher's path, rehearsed: `dvc exp run -S profile=paper` with only conf/rehearsal.yaml's
size/count overrides, against stand-ins in the real on-disk layouts (`python -m ipfacediff.standins`:
HF cache, arcface_torch backbone.pth, deepface/facenet/torchvision caches, CelebAMask-HQ and CelebV-HQ
release folders), through every stage to the tables; then each stage that needs a real weight or
dataset, with it taken away, fails in one line naming what is missing and where it goes.

Runs tools/rehearse.py in a throwaway copy of this checkout (tracked files). About 3 CPU-minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _rehearse_module():
    return load_script("tools/rehearse.py")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, media_dir):
    rehearse = _rehearse_module()
    repo, env = rehearse.prepare(tmp_path_factory.mktemp("rehearsal"), media_dir)
    proc = rehearse.run(repo, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return repo, env, proc.stdout + proc.stderr


def test_overrides_are_sizes_and_counts_only():
    """Every key of conf/rehearsal.yaml is a size, a count or a length; nothing switches a method,
    a model, a loss or a data source (those are what the rehearsal exists to exercise)."""
    from ipfacediff.config import compose

    keys = yaml.safe_load((ROOT / "conf" / "rehearsal.yaml").read_text())["overrides"]
    size_or_count = ("crop_size", "n_train_faces", "n_eval_videos", "max_seconds", "steps", "batch_size", "checkpoint_every",
                     "num_workers", "max_new_tokens", "prompts", "frames", "side_by_side_height")
    assert all(k.split(".")[-1] in size_or_count for k in keys), keys
    composed = compose(["profile=paper", *_rehearse_module().overrides()])
    paper = compose(["profile=paper"])
    changed = {f"{s}.{k}" for s in paper if isinstance(paper[s], dict) for k in paper[s] if paper[s][k] != composed[s][k]}
    assert changed == set(keys)


@pytest.mark.repro_check  # a whole pipeline run (about 4 min): with the reproduction check, out of `make test`'s budget
def test_paper_profile_runs_every_stage_to_the_tables(rehearsal):
    repo, env, _ = rehearsal
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    expected = {name for name in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"] if name != "edit"}
    assert expected <= set(stages) and sum(s.startswith("edit@") for s in stages) == 5, sorted(stages)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["profile"] == "paper" and params["models"]["source"] == "local" and params["caption"]["captioner"] == "blip2"
    # the weights came from the real layouts: the HF cache snapshot, arcface backbone.pth, RAFT in torch hub
    base = json.loads((repo / "models" / "base" / "ipfacediff.json").read_text())
    assert "/hub/models--stabilityai--stable-diffusion-2-1-base/snapshots/" in base["path"] and base["path"].startswith(env["HF_HOME"])
    clip = json.loads((repo / "models" / "clip" / "ipfacediff.json").read_text())
    assert "models--openai--clip-vit-base-patch32" in clip["path"]
    ident = json.loads((repo / "models" / "branches" / "identity" / "branch.json").read_text())
    assert "backbone.pth" in json.dumps(ident)
    direc = json.loads((repo / "models" / "branches" / "directional" / "branch.json").read_text())
    assert len(direc["clip"]) == 2 and "clip-vit-base-patch16" in direc["clip"][1]  # ViT-B/32 + ViT-B/16 (extra_clip)
    captions = [json.loads(s) for s in (repo / "data" / "captions" / "faces.jsonl").read_text().splitlines()]
    assert captions and all(c["source"] == "blip2:Salesforce/blip2-opt-2.7b" for c in captions)
    faces = (repo / "data" / "faces" / "index.csv").read_text()
    assert "_skin" not in faces  # CelebAMask-HQ's part masks are not training faces
    manifest = json.loads((repo / "data" / "media" / "manifest.json").read_text())
    videos = [m for m in manifest["media"] if m["kind"] == "video"]
    assert len(videos) == 2 and all("/processed/" in m["file"] for m in videos)  # clips, never the raw downloads
    tables = (repo / "reports" / "tables" / "tables.md").read_text()
    for name in ("VGG-Face", "CosFace", "FaceNet", "raft_large_C_T_SKHT_V2-ff5fadd5.pth", "openai/clip-vit-base-patch32"):
        assert name in tables, name
    for t in ("table1_identity", "table2_time", "table3_temporal"):
        for ext in ("md", "csv", "tex"):
            assert (repo / "reports" / "tables" / f"{t}.{ext}").is_file()


# stage -> (how to take its weight/dataset away: env changes, param overrides), what the line must name
MISSING = {
    "sample_media": ({}, {"data.celeba_hq": "data/external/nope"}, ["CelebA-HQ images not found at data.celeba_hq=data/external/nope"]),
    "models": ({"HF_HOME": "{empty}"}, {}, ["models.pretrained", "`hf download stabilityai/stable-diffusion-2-1-base`"]),
    "caption": ({"HF_HOME": "{empty}"}, {}, ["caption.blip2", "`hf download Salesforce/blip2-opt-2.7b`"]),
    "finetune_id": ({}, {"finetune_id.recognizer_weights": "data/external/arcface_r100/nope.pth"},
                    ["nope.pth: recogniser weights not found", "finetune_id.recognizer_weights"]),
    "finetune_dir": ({"HF_HOME": "{empty}"}, {}, ["finetune_dir.extra_clip", "`hf download openai/clip-vit-base-patch16`"]),
    "metrics_identity": ({"DEEPFACE_HOME": "{empty}"}, {}, ["vgg_face_weights.h5", "metrics.recognizer_weights.vggface"]),
    "metrics_temporal": ({"TORCH_HOME": "{empty}"}, {}, ["raft_large_C_T_SKHT_V2-ff5fadd5.pth", "RAFT weights not found"]),
}


def _set(params: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for k in path:
        params = params[k]
    params[last] = value


@pytest.mark.repro_check  # needs the rehearsal's whole-pipeline fixture
def test_each_stage_missing_its_weight_or_dataset_fails_in_one_line(rehearsal, tmp_path):
    repo, env, _ = rehearsal
    dvc_stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for stage, (env_changes, overrides, needles) in MISSING.items():
        params = yaml.safe_load((repo / "params.yaml").read_text())
        for k, v in overrides.items():
            _set(params, k, v)
        pfile = tmp_path / f"{stage}.params.yaml"
        pfile.write_text(yaml.safe_dump(params))
        out = tmp_path / f"{stage}.out"
        # the stage's own command, its outputs redirected so the rehearsal's stay as they are
        cmd = " ".join(dvc_stages[stage]["cmd"].split()) + f" --params {pfile}"
        cmd = _redirect_outputs(stage, cmd, out)
        full_env = {**os.environ, **env, **{k: v.format(empty=empty) for k, v in env_changes.items()},
                    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo / "src"), "WANDB_MODE": "disabled"}
        proc = subprocess.run(cmd, shell=True, cwd=repo, env=full_env, capture_output=True, text=True, timeout=600)
        lines = [s for s in proc.stderr.strip().splitlines() if s.strip()]
        assert proc.returncode == 2, (stage, proc.stderr[-2000:])
        assert lines[-1].startswith(f"{stage}: error: "), (stage, lines[-3:])
        assert all(n in lines[-1] for n in needles), (stage, lines[-1])
        assert not out.exists(), stage  # nothing half-written


def _redirect_outputs(stage: str, cmd: str, out: Path) -> str:
    """Point the command's output arguments at `out` (positional or --out)."""
    if "--out " in cmd:
        import re

        return re.sub(r"--out \S+", f"--out {out}", cmd)
    parts = cmd.split(" --params ")[0].split()
    # positional form `python stages/X.py IN... OUT`: the last positional is the output
    return " ".join(parts[:-1] + [str(out)]) + " --params " + cmd.split(" --params ")[1]
