"""Small things a newcomer hit, each fixed: metrics without a gallery, --version, --branches typo,
no face refused before the models load, SIGTERM during inversion, the record beside the output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ipfacediff.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def face_clip(grid_clip) -> Path:
    """6 frames of a GRID talking head with its audio (conftest.grid_clip)."""
    return grid_clip(6)


def test_metrics_identity_without_gallery(face_clip, capsys):
    code, out, err = run(["metrics", "identity", "--original", str(face_clip), "--edited", str(face_clip),
                          "--recognizer", "sface"], capsys)
    assert code == 0, err
    assert "cosine distance" in out and "rank" not in out  # no gallery: no retrieval columns


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    from ipfacediff import __version__

    assert capsys.readouterr().out.strip() == f"ipfacediff {__version__}"


def test_branches_typo_is_an_error(face_clip, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    code, _, err = run(["edit", str(face_clip), "-p", "glasses", "-o", str(out), "--models", str(tmp_path / "m"),
                        "--branches", str(tmp_path / "typo")], capsys)
    assert code == 2 and "typo" in err and "branches folder not found" in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_no_face_refused_before_models_load(tiny_models, tmp_path, capsys, monkeypatch):
    from ipfacediff.video import write_video

    frames = np.repeat(np.random.default_rng(0).integers(0, 255, (1, 64, 80, 3), dtype=np.uint8), 4, axis=0)
    src = write_video(tmp_path / "noface.mp4", frames, 10).path

    def no_loading(*a, **k):
        raise AssertionError("models were loaded before the face check")

    monkeypatch.setattr("ipfacediff.diffusion.models.load_components", no_loading)
    code, _, err = run(["edit", src, "-p", "glasses", "-o", str(tmp_path / "o.mp4"), "--models", str(tiny_models)], capsys)
    assert code == 2 and "no face" in err and "noface.mp4" in err
    assert {p.name for p in tmp_path.iterdir()} == {"noface.mp4"}


def test_record_beside_output_named_after_it(face_clip, tiny_models, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    code, _, err = run(["edit", str(face_clip), "-p", "glasses", "-o", str(out), "--models", str(tiny_models),
                             "--branches", "base", "--steps", "1"], capsys)
    assert code == 0, err
    assert {p.name for p in tmp_path.iterdir()} == {"x.mp4", "x.mp4.json"}  # as README and --help say


@pytest.mark.slow
def test_sigterm_during_inversion_leaves_no_temp_file(face_clip, tiny_models, tmp_path):
    """A real SIGTERM while `invert` writes its cache: exit 143, no .tmp.safetensors left."""
    cache = tmp_path / "c.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ipfacediff.cli", "invert", str(face_clip), "--cache", str(cache),
                             "--models", str(tiny_models), "--steps", "200"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".c.*.tmp.safetensors")):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    assert list(tmp_path.glob(".c.*.tmp.safetensors")), "inversion never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def _subparser(name: str):
    from ipfacediff.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    return sub.choices[name]


def test_setting_options_come_from_the_settings_fields_and_default_to_conf(monkeypatch, tmp_path):
    """The options of `edit`/`invert` that are settings (settings.py `cli()` fields) take type, help and
    default from the field: without a flag and without params.yaml they resolve to conf/config.yaml's
    value, the help names that value, and no hand-typed option shadows another settings field."""
    import dataclasses

    from ipfacediff import config
    from ipfacediff.cli.edit import _settings
    from ipfacediff.cli.settings_args import setting_options
    from ipfacediff.settings import DataSettings, EditSettings, Settings

    conf = config.compose(["~profile"])  # conf/config.yaml without a profile
    opts = setting_options()
    assert {o.key for o in opts} >= {"seed", "device", "data.face_index", "edit.steps", "edit.guidance_scale", "edit.negative_prompt"}
    monkeypatch.setattr(config, "PARAMS", tmp_path / "absent.yaml")  # no project params.yaml: the settings defaults
    edit, invert = _subparser("edit"), _subparser("invert")
    s = _settings(edit.parse_args(["in.mp4", "-p", "x", "-o", "out.mp4"]))
    resolved = {"seed": s["seed"], "device": s["device"], "data.face_index": s["face_index"],
                **{f"edit.{k}": v for k, v in dataclasses.asdict(s["edit"]).items()}}
    help_of = {a.dest: a.help for a in edit._actions}
    for o in opts:
        want = conf[o.section][o.name] if o.section else conf[o.name]
        assert o.default == want and resolved[o.key] == want, o.key
        assert f"params {o.key}; {want!r} in conf/" in help_of[o.name]
    assert {a.dest for a in invert._actions} >= {o.name for o in opts if o.invert}
    assert "guidance_scale" not in {a.dest for a in invert._actions}  # edit-only settings stay off `invert`
    # flags override, parsed with the field's type
    s = _settings(edit.parse_args(["in.mp4", "-p", "x", "-o", "o.mp4", "--steps", "3", "--guidance-scale", "2.5", "--seed", "4"]))
    assert (s["edit"].steps, s["edit"].guidance_scale, s["seed"]) == (3, 2.5, 4) and isinstance(s["edit"].guidance_scale, float)
    # every other option named like a settings field is a deliberate exception
    fields = {f.name for cls in (Settings, DataSettings, EditSettings) for f in dataclasses.fields(cls)
              if not dataclasses.is_dataclass(getattr(Settings(), f.name, None))}  # values, not the sections (--models is a folder)
    derived = {o.name for o in opts}
    serve = _subparser("serve")
    shadowing = {a.dest for p in (edit, invert, serve) for a in p._actions if a.dest in fields} - derived
    assert shadowing == {"crop_size"}  # --crop-size defaults to the model's resolution, not data.crop_size
    assert {a.dest: a.default for a in serve._actions if a.dest in derived} == {"steps": None, "device": None}


def test_bad_setting_flag_is_one_line_naming_it(face_clip, tmp_path, capsys):
    code, _, err = run(["edit", str(face_clip), "-p", "glasses", "-o", str(tmp_path / "o.mp4"), "--models", str(tmp_path / "m"),
                        "--device", "gpu"], capsys)
    assert code == 2 and "--device 'gpu'" in err and len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
