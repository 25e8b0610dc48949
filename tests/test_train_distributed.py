"""`accelerate launch` with 2 processes on CPU (gloo): both fine-tunes, gradient sync, checkpoint and
resume; and the launcher dvc.yaml's training commands go through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipfacediff.train import launch

ROOT = Path(__file__).resolve().parents[1]
CPU2 = ROOT / "conf" / "accelerate" / "cpu2.yaml"


def test_launcher_follows_the_accelerate_config(tmp_path, monkeypatch):
    monkeypatch.setenv(launch.ENV_CONFIG, str(CPU2))
    cmd = launch.command("stages/finetune_id.py", ["--faces", "f"], launch.config_file())
    assert cmd[-5:] == ["launch", "--config_file", str(CPU2), "stages/finetune_id.py", "--faces", "f"][-5:]
    assert "launch" in cmd and Path(cmd[0]).name in ("accelerate", Path(sys.executable).name)
    one = tmp_path / "one.yaml"
    one.write_text("distributed_type: 'NO'\nnum_processes: 1\n")
    assert launch.command("s.py", ["x"], one) == [sys.executable, "s.py", "x"]
    assert launch.command("s.py", [], None) == [sys.executable, "s.py"]  # no config: one process
    monkeypatch.setenv(launch.ENV_CONFIG, str(tmp_path / "missing.yaml"))
    proc = subprocess.run([sys.executable, "-m", "ipfacediff.train.launch", "stages/finetune_id.py"], capture_output=True,
                          text=True, env={**os.environ, launch.ENV_CONFIG: str(tmp_path / "missing.yaml")})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("launch: error:")
    assert "missing.yaml" in proc.stderr


def test_dvc_training_commands_use_the_launcher():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("finetune_id", "finetune_dir"):
        assert stages[name]["cmd"].startswith(f"python -m ipfacediff.train.launch stages/{name}.py "), name


@pytest.mark.slow
def test_two_processes_sync_gradients_checkpoint_and_resume(tmp_path):
    import torch
    from safetensors.torch import load_file

    from ipfacediff.diffusion.models import build_tiny, build_tiny_clip
    from tests.test_train import write_faces

    build_tiny(tmp_path / "base", seed=0)
    build_tiny_clip(tmp_path / "clip", seed=0)
    faces, caps = write_faces(tmp_path / "data", n=8)
    out = tmp_path / "records"
    out.mkdir()
    cmd = launch.command(str(ROOT / "tests" / "dist_finetune_worker.py"),
                         [str(tmp_path / "work"), str(tmp_path / "base"), str(tmp_path / "clip"), str(faces), str(caps), str(out)], CPU2)
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for r in (0, 1) for line in (out / f"rank{r}.jsonl").read_text().splitlines()]
    assert {r["rank"] for r in rows} == {0, 1}
    for branch in ("identity", "directional"):
        for run in ("A", "B"):
            steps = {}
            for r in rows:
                if (r["branch"], r["run"]) == (branch, run):
                    steps.setdefault(r["step"], {})[r["rank"]] = r
            assert sorted(steps) == [1, 2], (branch, run, sorted(steps))
            for step, by_rank in steps.items():
                a, b = by_rank[0], by_rank[1]
                # each rank trained on its own half of the global batch of 4 ...
                assert len(a["indices"]) == len(b["indices"]) == 2 and not set(a["indices"]) & set(b["indices"]), (branch, run, step)
                # ... yet both hold bit-identical weights: the gradients were averaged across ranks
                assert a["sha256"] == b["sha256"], (branch, run, step)
        a = load_file(str(tmp_path / "work" / "A" / branch / "pytorch_lora_weights.safetensors"))
        b = load_file(str(tmp_path / "work" / "B" / branch / "pytorch_lora_weights.safetensors"))
        assert a.keys() == b.keys() and a and all((a[k] == b[k]).all() for k in a), branch  # resumed == uninterrupted
        assert len({r["sha256"] for r in rows if r["branch"] == branch and r["run"] == "A"}) == 2  # weights moved each step
        rngs = torch.load(tmp_path / "work" / "ckptA" / branch / "step-0000002" / "rng.pt", weights_only=False)
        assert len(rngs) == 2  # one RNG state per process in the checkpoint


def test_device_auto_without_a_gpu_trains_in_float32(capsys):
    """The paper profile (device auto, fp16) on a machine without a GPU: float32, said once on stderr;
    an explicit `device: cpu` with fp16 stays an error (tests/test_train.py)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fp16 mixed precision applies")
    from ipfacediff.train.finetune import make_accelerator
    from ipfacediff.train.trainer import TrainConfig

    cfg = TrainConfig(mixed_precision="fp16")
    acc = make_accelerator("auto", cfg)
    assert cfg.mixed_precision == "no" and acc.mixed_precision == "no"
    assert "device auto found no GPU: mixed_precision fp16 -> no" in capsys.readouterr().err
