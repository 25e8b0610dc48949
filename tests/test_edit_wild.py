"""`ipfacediff edit` on in-the-wild inputs: a corpus of clips and arguments, each either edited
correctly (frame count, size, timestamps, audio checked) or refused with one line naming the file
and the problem, exit 2, nothing left behind, the input untouched. Plus --start/--end and --face-ref."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from wild_clips import tone, write_clip

from ipfacediff.cli import main
from ipfacediff.fsio import sha256_file

pytestmark = pytest.mark.slow

N = 4  # frames per clip: enough to track, invert and edit, few enough to stay fast


@pytest.fixture(scope="module")
def faces(media_dir) -> list[np.ndarray]:
    """N frames of a GRID talking head (360x288)."""
    from ipfacediff.video import read_video

    return list(read_video(media_dir / "videos" / "grid_bbaf2n.mpg", max_frames=N).frames)


def frame_times(path) -> list[Fraction]:
    with av.open(str(path)) as c:
        times = [Fraction(f.pts) * f.time_base for f in c.decode(video=0)]
    return [t - times[0] for t in times]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (sha256_file(p) if p.is_file() else "dir") for p in sorted(folder.rglob("*"))}


def visible_lines(stderr: str) -> list[str]:
    """What a terminal shows: progress bars redraw themselves with carriage returns."""
    return [v for v in (line.rsplit("\r", 1)[-1].strip() for line in stderr.split("\n")) if v]


def edit(argv, capsys, models, steps=True):
    extra = ["--models", str(models), "--branches", "base"] + (["--steps", "1"] if steps else [])
    code = main(["edit", *argv, *extra])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# --------------------------------------------------------------------------------------- clips that edit
def _webcam(folder: Path, faces) -> Path:
    return write_clip(folder / "cam.avi", faces, codec="mjpeg", pix_fmt="yuvj420p", fmt="avi", audio=tone(N / 15))


def _vfr(folder: Path, faces) -> Path:
    return write_clip(folder / "vfr.mov", faces, pts=[0, 1, 3, 5], time_base=Fraction(1, 15), fmt="mov",
                      audio=tone(7 / 15, rate=16000), audio_rate=16000, audio_codec="pcm_s16le")


def _odd(folder: Path, faces) -> Path:
    import cv2

    small = [np.ascontiguousarray(cv2.resize(f[30:270, 40:360], (161, 121), interpolation=cv2.INTER_AREA)) for f in faces]
    return write_clip(folder / "odd 161x121 élan.mkv", small, codec="libx264", pix_fmt="yuv444p", fmt="matroska",
                      audio=tone(N / 15, rate=48000), audio_rate=48000, audio_codec="flac")


def _rotated(folder: Path, faces) -> Path:
    stored = [np.ascontiguousarray(np.rot90(f, k=-1)) for f in faces]  # stored sideways, displayed upright
    return write_clip(folder / "phone.mp4", stored, rotation=90, fmt="mp4")


def _late_audio(folder: Path, faces) -> Path:
    return write_clip(folder / "late audio.mkv", faces, fmt="matroska", audio=tone(0.1, rate=22050), audio_rate=22050,
                      audio_codec="pcm_s16le", audio_start_s=0.1)


EDITS = {
    # name: (clip builder, output name, expected output audio codec or None)
    "webcam avi mjpeg + u8 pcm 11 kHz -> mp4": (_webcam, "out.mp4", "aac"),
    "webcam avi -> mkv keeps pcm": (_webcam, "out.mkv", "pcm_u8"),
    "variable frame rate mov -> mp4": (_vfr, "out.mp4", "aac"),
    "odd size, flac, non-ascii + spaces -> mov (aac: QuickTime has no flac)": (_odd, "sortie é 1.mov", "aac"),
    "rotated phone clip, no audio": (_rotated, "out.mp4", None),
    "audio starting after the video -> new folder": (_late_audio, "new/deeper/out.mkv", "pcm_s16le"),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_wild_clip_edits_correctly(case, faces, tiny_models, tmp_path, capsys):
    from ipfacediff.video import probe

    build, out_name, audio = EDITS[case]
    src = build(tmp_path, faces)
    before, info = sha256_file(src), probe(src)
    out = tmp_path / out_name
    code, _, err = edit([str(src), "-p", "a person with glasses", "-o", str(out)], capsys, tiny_models)
    assert code == 0, err
    res = probe(out)
    assert (res.n_frames, res.width, res.height) == (info.n_frames, info.width, info.height)
    got, want = frame_times(out), frame_times(src)
    if out.suffix == ".mkv":  # FFmpeg's Matroska muxer stores milliseconds: exact to the nearest ms
        assert all(abs(g - w) <= Fraction(1, 2000) for g, w in zip(got, want, strict=True))
    else:  # MP4 / MOV keep the source's timestamps exactly
        assert got == want
    assert res.rotation == 0  # frames are written upright (display orientation), so no tag is needed
    assert res.audio_codec == audio
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert record["output"]["frames"] == N and record["output"]["audio_carried"]
    assert sha256_file(src) == before
    assert not list(out.parent.glob(".*"))  # no work folder or temporary file left


def test_start_end_edits_only_that_span(faces, tiny_models, tmp_path, capsys):
    from ipfacediff.video import read_video

    src = write_clip(tmp_path / "talk.mp4", faces, time_base=Fraction(1, 25), fmt="mp4")
    out = tmp_path / "part.mp4"
    code, _, err = edit([str(src), "-p", "a person with glasses", "-o", str(out), "--start", "0.04", "--end", "0.12"],
                        capsys, tiny_models)
    assert code == 0, err
    a, b = read_video(src).frames.astype(int), read_video(out).frames.astype(int)
    diff = np.abs(a - b).reshape(N, -1).max(1)
    # frames 0 and 3 are outside [0.04, 0.12) s: the decoded input re-encoded (crf 18 noise only);
    # frames 1 and 2 (t = 0.04, 0.08) have the random-weight edit pasted over the face
    assert diff[0] < 40 and diff[3] < 40 and diff[1] > 60 and diff[2] > 60
    assert np.abs(a[[0, 3]] - b[[0, 3]]).mean() < 2.0
    record = json.loads((tmp_path / "part.mp4.json").read_text())
    assert record["span"]["first_frame"] == 1 and record["span"]["frames"] == 2


# --------------------------------------------------------------------------------------- inputs refused
def _write(name, data):
    def make(folder, faces):
        p = folder / name
        p.write_bytes(data(folder, faces) if callable(data) else data)
        return p
    return make


def _truncated(folder, faces):
    full = write_clip(folder / "full.tmp.mp4", faces, fmt="mp4")
    data = full.read_bytes()[:400]
    full.unlink()
    return data


def _audio_only(folder, faces):
    p = folder / "a.tmp.wav"
    c = av.open(str(p), "w")
    s = c.add_stream("pcm_s16le", rate=8000)
    s.layout = "mono"
    f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    f.sample_rate = 8000
    for pkt in [*s.encode(f), *s.encode()]:
        c.mux(pkt)
    c.close()
    data = p.read_bytes()
    p.unlink()
    return data


def _no_face(folder, faces):
    return write_clip(folder / "noface.mp4", [np.full((64, 80, 3), 90, np.uint8)] * N, fmt="mp4")


def _clip(name="talk.mp4"):
    def make(folder, faces):
        return write_clip(folder / name, faces, time_base=Fraction(1, 25), fmt="mp4")
    return make


def _folder(folder, faces):
    (folder / "clips.mp4").mkdir()
    return folder / "clips.mp4"


REFUSED = {
    # name: (input builder, extra args or callable(folder, src) -> args, expected text in the one line)
    "random bytes": (_write("noise.mp4", np.random.default_rng(0).bytes(4096)), [], "not a readable video"),
    "truncated mp4": (_write("cut.mp4", _truncated), [], "cut.mp4"),
    "text file named .avi": (_write("notes.avi", b"just some notes\n"), [], "not a readable video"),
    "empty file": (_write("empty.mkv", b""), [], "empty file"),
    "audio only": (_write("voice.mov", _audio_only), [], "no video stream"),
    "missing path": (lambda folder, faces: folder / "nope ü.mp4", [], "input video not found"),
    "folder as input": (_folder, [], "not a file"),
    "no face": (_no_face, [], "no face"),
    "face index beyond the faces": (_clip(), ["--face-index", "3"], "no face #3"),
    "empty prompt": (_clip(), ["-p", ""], "empty prompt"),
    "blank prompt": (_clip(), ["-p", " \t "], "empty prompt"),
    "missing models": (_clip(), ["--models", "MISSING"], "model folder not found"),
    "branches typo": (_clip(), ["--branches", "MISSING"], "branches folder not found"),
    "output = input": (_clip(), ["-o", "SRC"], "refusing to overwrite the input"),
    "output = input via ./": (_clip(), ["-o", "./SRC"], "refusing to overwrite the input"),
    "output suffix .gif": (_clip(), ["-o", "out.gif"], "output must end in"),
    "output is a folder": (_clip(), ["-o", "FOLDER.mp4"], "output is a folder"),
    "output under a file": (_clip(), ["-o", "SRC/out.mp4"], "is a file, not a folder"),
    "start after the end": (_clip(), ["--start", "5"], "no frame between"),
    "end before start": (_clip(), ["--start", "0.1", "--end", "0.05"], "must be after --start"),
    "negative start": (_clip(), ["--start", "-1"], "--start must be"),
    "zero steps": (_clip(), ["--steps", "0"], "--steps must be >= 1"),
    "face-ref missing": (_clip(), ["--face-ref", "MISSING.jpg"], "reference photo not found"),
    "face-ref without a face": (_clip(), ["--face-ref", "BLANK.png"], "no face found in the reference photo"),
    "unknown method": (_clip(), ["--method", "magic"], "invalid choice: 'magic'"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_input_refused_in_one_line(case, faces, tiny_models, tmp_path, capsys):
    import cv2

    build, extra, expected = REFUSED[case]
    folder = tmp_path / "in dir ñ"
    folder.mkdir()
    src = build(folder, faces)
    cv2.imwrite(str(folder / "BLANK.png"), np.full((64, 64, 3), 128, np.uint8))
    (folder / "FOLDER.mp4").mkdir()
    subst = {"SRC": str(src), "./SRC": str(src.parent / "." / src.name), "MISSING": str(folder / "missing ø"),
             "MISSING.jpg": str(folder / "missing.jpg"), "BLANK.png": str(folder / "BLANK.png"),
             "FOLDER.mp4": str(folder / "FOLDER.mp4"), "SRC/out.mp4": str(src / "out.mp4"), "out.gif": str(folder / "out.gif")}
    extra = [subst.get(a, a) for a in extra]
    args = [str(src), "-p", "glasses", "-o", str(folder / "out.mp4")]
    for flag in ("-p", "-o"):
        if flag in extra:
            i = args.index(flag)
            args[i + 1] = extra[extra.index(flag) + 1]
            extra = extra[: extra.index(flag)] + extra[extra.index(flag) + 2:]
    before = snapshot(folder)
    models = ["--models", str(tiny_models)] if "--models" not in extra else []
    try:
        code = main(["edit", *args, *models, "--steps", "1", *(["--branches", "base"] if "--branches" not in extra else []),
                     *extra])
    except SystemExit as e:  # argument errors end in argparse (one line too: cli.OneLineParser)
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = visible_lines(err)
    assert len(lines) == 1 and lines[0].startswith(("ipfacediff: error: ", "ipfacediff edit: error: ")), err
    assert "Traceback" not in err
    assert expected in err
    named = [a for a in (str(src), *[str(x) for x in extra], args[3]) if a in err or Path(a).name in err]
    assert named or "prompt" in expected or "--" in expected, err  # names the file (argument errors name the flag)
    assert snapshot(folder) == before  # nothing written, nothing changed
    assert not list(tmp_path.glob(".*"))
