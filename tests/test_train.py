"""The fine-tuning harness: gradients only where intended, bit-identical resume, atomic checkpoints,
branches the engine loads, and bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ipfacediff.errors import InputError
from ipfacediff.train.data import StepBatchSampler, build_face_set, sample_indices
from ipfacediff.train.finetune import Paths, finetune
from ipfacediff.train.trainer import TrainConfig, list_checkpoints, prepare_unet

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from ipfacediff.diffusion.models import build_tiny, build_tiny_clip

    root = tmp_path_factory.mktemp("models")
    build_tiny(root / "base", seed=0)
    build_tiny_clip(root / "clip", seed=0)
    return {"base": root / "base", "clip": root / "clip"}


def write_faces(root: Path, n: int = 4, size: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """A prep_faces-shaped folder of smooth random images + a captions JSONL."""
    import cv2

    rng = np.random.default_rng(seed)
    (root / "faces" / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        img = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / "faces" / "images" / f"f{i}.png"), img)
        rows.append({"image": f"images/f{i}.png", "source": "synthetic", "clip": "", "identity": f"p{i}", "frame": -1, "score": 0.9})
    with open(root / "faces" / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "faces" / "summary.json").write_text(json.dumps({"crop_size": size, "crop_scale": 1.0}))
    (root / "captions").mkdir()
    with open(root / "captions" / "faces.jsonl", "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"image": r["image"], "caption": f"a photo of a person number {i}", "source": "test"}) + "\n")
    return root / "faces", root / "captions" / "faces.jsonl"


def params_for(branch: str, **overrides) -> dict:
    section = "finetune_id" if branch == "identity" else "finetune_dir"
    cfg = {"steps": 4, "batch_size": 2, "grad_accum": 1, "lr": 1e-3, "checkpoint_every": 2, "mode": "lora", "lora_rank": 2}
    cfg.update(overrides)
    return {"profile": "test", "seed": 0, "device": "cpu", "wandb": {"mode": "disabled"}, section: cfg}


def paths_for(tmp: Path, models: dict, faces: Path, captions: Path, branch: str, tag: str = "") -> Paths:
    return Paths(out=tmp / f"out{tag}" / branch, checkpoints=tmp / f"ckpt{tag}" / branch, curve=tmp / f"curve{tag}" / f"{branch}.tsv",
                 faces=faces, captions=captions, models=models["base"], clip=models["clip"])


def components(models):
    from ipfacediff.diffusion.models import load_components

    return load_components(models["base"])


def batch_of(faces: Path, n: int = 2) -> dict:
    from ipfacediff.train.data import FaceDataset, collate

    ds = FaceDataset(build_face_set(faces, faces.parent / "captions" / "faces.jsonl"))
    return collate([ds[i] for i in range(n)])


# --------------------------------------------------------------------------- gradients


def _grad_report(module: torch.nn.Module) -> tuple[set[str], set[str]]:
    with_grad = {n for n, p in module.named_parameters() if p.grad is not None}
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    return with_grad, trainable


@pytest.mark.parametrize("branch", ["identity", "directional"])
def test_lora_only_branch_adapter_receives_gradients(models, tmp_path, branch):
    from ipfacediff.train.finetune import build_objective

    from ipfacediff.train.finetune import DirectionalConfig, IdentityConfig

    faces, caps = write_faces(tmp_path)
    comps = components(models)
    face_set = build_face_set(faces, caps)
    cfg = IdentityConfig(mode="lora", lora_rank=2) if branch == "identity" else DirectionalConfig(mode="lora", lora_rank=2)
    objective, _, aux = build_objective(branch, cfg, comps, face_set, paths_for(tmp_path, models, faces, caps, branch),
                                        torch.device("cpu"), torch.float32)
    prepare_unet(comps.unet, branch, cfg)
    terms = objective(comps.unet, batch_of(faces), torch.Generator().manual_seed(0))
    terms["loss"].backward()

    with_grad, trainable = _grad_report(comps.unet)
    assert trainable and all(".lora_" in n and f".{branch}." in n for n in trainable)
    assert with_grad == trainable  # every adapter weight is in the graph, nothing else is
    lora_b = [p.grad for n, p in comps.unet.named_parameters() if ".lora_B." in n]
    assert lora_b and any(g.abs().sum() > 0 for g in lora_b)  # B starts at 0, so its gradient is the live one
    frozen = [comps.vae, comps.text_encoder, *aux]
    for m in frozen:
        assert all(not p.requires_grad and p.grad is None for p in m.parameters()), type(m).__name__


def test_full_mode_trains_the_whole_unet_and_nothing_else(models, tmp_path):
    from ipfacediff.train.finetune import IdentityConfig, build_objective

    faces, caps = write_faces(tmp_path)
    comps = components(models)
    face_set = build_face_set(faces, caps)
    objective, _, aux = build_objective("identity", IdentityConfig(mode="full"), comps, face_set,
                                        paths_for(tmp_path, models, faces, caps, "identity"), torch.device("cpu"), torch.float32)
    prepare_unet(comps.unet, "identity", TrainConfig(mode="full"))
    objective(comps.unet, batch_of(faces), torch.Generator().manual_seed(0))["loss"].backward()
    with_grad, trainable = _grad_report(comps.unet)
    assert trainable == {n for n, _ in comps.unet.named_parameters()}
    assert with_grad == trainable
    for m in (comps.vae, comps.text_encoder, *aux):
        assert all(not p.requires_grad and p.grad is None for p in m.parameters())


# --------------------------------------------------------------------------- resume


class Crash(RuntimeError):
    pass


def _crash_at(k: int):
    def hook(step: int):
        if step == k:
            raise Crash(f"simulated crash after step {step}")
    return hook


@pytest.mark.parametrize("branch,extra", [("identity", {"grad_accum": 2, "ema": True, "ema_decay": 0.9}),
                                          ("directional", {"lr_scheduler": "cosine", "lr_warmup_steps": 1})])
def test_interrupted_and_resumed_run_is_bit_identical(models, tmp_path, branch, extra):
    from safetensors.torch import load_file

    faces, caps = write_faces(tmp_path)
    params = params_for(branch, **extra)
    straight = paths_for(tmp_path, models, faces, caps, branch, "A")
    finetune(branch, params, straight)

    resumed = paths_for(tmp_path, models, faces, caps, branch, "B")
    with pytest.raises(Crash):
        finetune(branch, params, resumed, on_step=_crash_at(2))
    assert not resumed.out.exists()  # nothing half-written
    assert [s for s, _ in list_checkpoints(resumed.checkpoints, _fingerprint_of(resumed.checkpoints))] == [2]
    meta = finetune(branch, params, resumed)
    assert meta["resumed_from"] == 2

    a = load_file(str(straight.out / "pytorch_lora_weights.safetensors"))
    b = load_file(str(resumed.out / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.curve.read_text() == resumed.curve.read_text()
    assert len(straight.curve.read_text().splitlines()) == 1 + 4
    # the saved branch is the same files whether training resumed or not (DVC/Snakemake reruns stay cached)
    assert (straight.out / "branch.json").read_bytes() == (resumed.out / "branch.json").read_bytes()


def _fingerprint_of(ckpt_dir: Path) -> str:
    states = [json.loads((d / "state.json").read_text()) for d in ckpt_dir.glob("step-*")]
    assert states
    return states[0]["fingerprint"]


def test_a_crash_while_writing_a_checkpoint_never_leaves_it_as_latest(models, tmp_path, monkeypatch):
    import ipfacediff.train.trainer as trainer

    faces, caps = write_faces(tmp_path)
    params = params_for("directional")
    paths = paths_for(tmp_path, models, faces, caps, "directional")
    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, f, *a, **kw):  # the 2nd checkpoint dies after writing some files
        if str(f).endswith("scheduler.pt"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("disk full")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(trainer.torch, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        finetune("directional", params, paths)
    monkeypatch.setattr(trainer.torch, "save", real_save)
    fp = _fingerprint_of(paths.checkpoints)
    assert [s for s, _ in list_checkpoints(paths.checkpoints, fp)] == [2]
    assert not (paths.checkpoints / "step-0000004").exists()
    assert not [p for p in paths.checkpoints.iterdir() if p.name.startswith(".")]  # temporary folder cleaned up

    # decoys: a folder without state.json, one from another configuration, one whose weights are corrupt
    (paths.checkpoints / "step-0000003").mkdir()
    other = paths.checkpoints / "step-0000009"
    other.mkdir()
    for f in trainer.CKPT_FILES:
        (other / f).write_text("x")
    (other / "state.json").write_text(json.dumps({"step": 9, "fingerprint": "another-configuration"}))
    assert [s for s, _ in list_checkpoints(paths.checkpoints, fp)] == [2]
    meta = finetune("directional", params, paths)
    assert meta["resumed_from"] == 2 and meta["steps"] == 4

    # the newest complete checkpoint is corrupt on disk: fall back to the previous one
    (paths.checkpoints / "step-0000004" / "trainable.safetensors").write_bytes(b"garbage")
    params_more = params_for("directional")
    meta = finetune("directional", params_more, paths)
    assert meta["resumed_from"] == 2


def test_checkpoints_of_another_configuration_are_not_resumed(models, tmp_path):
    faces, caps = write_faces(tmp_path)
    paths = paths_for(tmp_path, models, faces, caps, "directional")
    finetune("directional", params_for("directional"), paths)
    meta = finetune("directional", params_for("directional", lr=5e-4), paths)
    assert meta["resumed_from"] == 0


# --------------------------------------------------------------------------- the engine loads the branches


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_saved_branch_loads_into_the_engine_and_changes_the_unet_output(models, tmp_path, mode):
    from ipfacediff.diffusion.branches import load_branches, read_branch_meta

    faces, caps = write_faces(tmp_path)
    paths = paths_for(tmp_path, models, faces, caps, "identity")
    finetune("identity", params_for("identity", mode=mode, steps=2), paths)
    assert read_branch_meta(paths.out)["mode"] == mode

    comps = components(models)
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([500])
    emb = torch.randn(1, 77, comps.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        base_out = comps.unet(x, t, encoder_hidden_states=emb).sample.clone()
        branches = load_branches(comps.unet, {"identity": paths.out, "directional": None})
        with branches.use("identity") as unet:
            tuned = unet(x, t, encoder_hidden_states=emb).sample
        with branches.use("directional") as unet:  # no branch -> base weights
            plain = unet(x, t, encoder_hidden_states=emb).sample
    assert (tuned - base_out).abs().max() > 1e-5
    torch.testing.assert_close(plain, base_out, rtol=0, atol=1e-6)


def test_disabled_branch_is_an_empty_folder_meaning_base_weights(models, tmp_path):
    from ipfacediff.diffusion.branches import load_branches

    faces, caps = write_faces(tmp_path)
    paths = paths_for(tmp_path, models, faces, caps, "directional")
    finetune("directional", params_for("directional", enabled=False), paths)
    assert paths.out.is_dir() and not any(paths.out.iterdir())
    assert paths.curve.read_text().splitlines() == ["step\tloss\trecon\tdirectional\tlr"]
    b = load_branches(components(models).unet, {"directional": paths.out})
    assert b.sources["directional"] == "base"


def test_curve_tsv_columns_and_branch_meta(models, tmp_path):
    faces, caps = write_faces(tmp_path)
    paths = paths_for(tmp_path, models, faces, caps, "identity")
    meta = finetune("identity", params_for("identity", steps=2, lr_scheduler="linear"), paths)
    rows = [line.split("\t") for line in paths.curve.read_text().splitlines()]
    assert rows[0] == ["step", "loss", "recon", "identity", "lr"] and [r[0] for r in rows[1:]] == ["1", "2"]
    for r in rows[1:]:  # loss = recon + lambda_id * identity (lambda_id 1)
        assert float(r[1]) == pytest.approx(float(r[2]) + float(r[3]), rel=1e-5)
    assert float(rows[1][4]) > float(rows[2][4])  # linear decay
    saved = json.loads((paths.out / "branch.json").read_text())
    assert saved["profile"] == "test" and saved["recognizer"].startswith("sface") and saved["faces"] == 4
    assert saved["base_hash"] == meta["base_hash"] != "unknown"


# --------------------------------------------------------------------------- data order


def test_batch_order_is_a_pure_function_of_seed_and_step():
    full = list(StepBatchSampler(5, 2, seed=7, start=0, total=8))
    tail = list(StepBatchSampler(5, 2, seed=7, start=3, total=8))
    assert tail == full[3:]
    flat = [i for b in full for i in b]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))  # epochs are permutations
    ranks = [list(StepBatchSampler(5, 4, seed=7, start=0, total=3, rank=r, world=2)) for r in (0, 1)]
    whole = list(StepBatchSampler(5, 4, seed=7, start=0, total=3))
    assert [a + b for a, b in zip(*ranks)] == whole
    np.testing.assert_array_equal(sample_indices(5, 7, np.arange(5)), sample_indices(5, 7, np.arange(5)))
    with pytest.raises(InputError, match="divisible"):
        StepBatchSampler(5, 3, seed=0, start=0, total=1, rank=0, world=2)


# --------------------------------------------------------------------------- bad input


def test_missing_dataset_folder_is_a_clear_error(models, tmp_path):
    faces, caps = write_faces(tmp_path)
    paths = paths_for(tmp_path, models, tmp_path / "no_faces", caps, "identity")
    with pytest.raises(InputError) as e:
        finetune("identity", params_for("identity"), paths)
    assert "no_faces" in str(e.value) and "not found" in str(e.value)
    paths = paths_for(tmp_path, models, faces, tmp_path / "none.jsonl", "identity")
    with pytest.raises(InputError, match="captions file not found"):
        finetune("identity", params_for("identity"), paths)


def test_unreadable_and_faceless_images_are_skipped_and_counted(models, tmp_path):
    faces, caps = write_faces(tmp_path, n=5)
    (faces / "images" / "f1.png").write_bytes(b"\x89PNG broken")
    # f2 has no face: the caption stage left it out and said why
    lines = [line for line in caps.read_text().splitlines() if "f2.png" not in line]
    caps.write_text("\n".join(lines) + "\n")
    (caps.parent / "summary.json").write_text(json.dumps(
        {"faces": {"skipped": [{"image": "images/f2.png", "reason": "no face: YuNet found no face in f2.png"}]}}))
    face_set = build_face_set(faces, caps)
    assert len(face_set) == 3 and len(face_set.skipped) == 2
    assert face_set.skipped_counts() == {"unreadable": 1, "no face": 1}
    meta = finetune("identity", params_for("identity", steps=1, checkpoint_every=1),
                    paths_for(tmp_path, models, faces, caps, "identity"))
    assert meta["faces"] == 3 and meta["faces_skipped"] == 2 and meta["skipped_reasons"] == {"unreadable": 1, "no face": 1}


def test_no_usable_face_is_an_error_naming_the_folder(tmp_path):
    faces, caps = write_faces(tmp_path, n=2)
    for p in (faces / "images").iterdir():
        p.write_bytes(b"")
    with pytest.raises(InputError) as e:
        build_face_set(faces, caps)
    assert str(faces) in str(e.value) and "unreadable x2" in str(e.value)


def test_bad_training_parameters_are_clear_errors(models, tmp_path):
    faces, caps = write_faces(tmp_path)
    paths = paths_for(tmp_path, models, faces, caps, "identity")
    for overrides, match in (({"mode": "half"}, "mode"), ({"mixed_precision": "fp16"}, "fp16 needs a GPU"),
                             ({"optimizer": "adamw8bit"}, "adamw8bit"), ({"recognizer": "arcface"}, "recognizer_weights"),
                             ({"steps": 0}, "steps"), ({"bogus_key": 1}, "unknown key")):
        with pytest.raises(InputError, match=match):
            finetune("identity", params_for("identity", **overrides), paths)
    missing = tmp_path / "arcface.pth"
    with pytest.raises(InputError) as e:
        finetune("identity", params_for("identity", recognizer="arcface", recognizer_weights=str(missing)), paths)
    assert str(missing) in str(e.value)


def test_stage_cli_reports_bad_input_in_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    import yaml

    params.write_text(yaml.safe_dump(params_for("identity")))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "finetune_id.py"), "--params", str(params),
                           "--faces", str(tmp_path / "missing_faces"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ, "WANDB_MODE": "disabled"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("finetune_id: error:") and "missing_faces" in last
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_process_run_under_torchrun(models, tmp_path):
    """`accelerate launch`-style multi-process run (2 CPU processes, gloo): DDP, no_sync accumulation,
    per-rank batch slices, RNG states of both ranks in the checkpoint, one set of outputs."""
    import os

    import yaml

    faces, caps = write_faces(tmp_path, n=6)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_for("directional", batch_size=4, grad_accum=2, steps=2)))
    out, ckpt, curve = tmp_path / "out", tmp_path / "ckpt", tmp_path / "curve.tsv"
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(ROOT / "stages" / "finetune_dir.py"), "--params", str(params),
                           "--faces", str(faces), "--captions", str(caps), "--models", str(models["base"]), "--clip", str(models["clip"]),
                           "--out", str(out), "--checkpoints", str(ckpt), "--curve", str(curve)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finetune_dir [test]: 2 steps") == 1  # the main process reports
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert [line.split("\t")[0] for line in curve.read_text().splitlines()] == ["step", "1", "2"]
    rngs = torch.load(ckpt / "step-0000002" / "rng.pt", weights_only=False)
    assert len(rngs) == 2 and all({"python", "numpy", "torch"} <= set(r) for r in rngs)  # one entry per process
