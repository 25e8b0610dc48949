"""ipfacediff.face: detection, alignment (vs a naive least-squares reference), smoothing, mask,
crop -> paste-back round trip on real frames, tracking."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ipfacediff.errors import InputError
from ipfacediff.face import (
    ARCFACE_112, Track, align_transform, crop, detect_faces, face_mask, gaussian_smooth, invert_affine, jitter,
    params_to_transforms, paste_back, select_face, template, track_video, transform_points, transforms_to_params,
    umeyama, yunet_path,
)
from ipfacediff.face.detect import YUNET_SHA256
from ipfacediff.face.smooth import fill_missing
from ipfacediff.fsio import sha256_file
from ipfacediff.video import read_video


def still(media_dir, name):
    return cv2.imread(str(media_dir / "stills" / name))[:, :, ::-1].copy()


@pytest.fixture(scope="module")
def grid_frames(media_dir):
    return read_video(media_dir / "videos" / "grid_lwbsza.mpg", max_frames=24).frames


def similarity_lstsq(src, dst):
    """Naive reference: x' = a x - b y + tx, y' = b x + a y + ty solved by float64 least squares."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows, float), np.array(rhs, float), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


# --------------------------------------------------------------------------------------- detection
def test_yunet_model_pinned():
    assert sha256_file(yunet_path()) == YUNET_SHA256


def test_detect_one_face_arcface_order(grid_frames):
    faces = detect_faces(grid_frames[0])
    assert len(faces) == 1 and faces[0].score > 0.6
    lm = faces[0].landmarks5
    x0, y0, x1, y1 = faces[0].box
    assert np.all((lm[:, 0] > x0) & (lm[:, 0] < x1) & (lm[:, 1] > y0) & (lm[:, 1] < y1))
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left before image-right
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])  # eyes above nose above mouth


def test_detect_grayscale_and_rgba(media_dir):
    rgb = still(media_dir, "grace_hopper_512x512.jpg")
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert len(detect_faces(gray)) == 1 and len(detect_faces(gray[:, :, None])) == 1
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert len(detect_faces(rgba)) == 1
    with pytest.raises(InputError, match="uint8"):
        detect_faces(rgb.astype(np.float32))


def test_no_face_in_blank_or_texture():
    assert detect_faces(np.zeros((120, 160, 3), np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 255, (97, 131, 3), dtype=np.uint8)  # odd size too
    assert detect_faces(noise) == []


@pytest.fixture(scope="module")
def two_faces(media_dir):
    """Canvas with a large (Grace Hopper, ~300 px) and a small (astronaut, ~150 px) face."""
    canvas = np.full((360, 520, 3), 200, np.uint8)
    canvas[20:340, 10:330] = cv2.resize(still(media_dir, "grace_hopper_512x512.jpg"), (320, 320))
    canvas[100:260, 350:510] = cv2.resize(still(media_dir, "skimage_astronaut.png")[:300, 100:400], (160, 160))
    return canvas


def test_several_faces_largest_first(two_faces):
    faces = detect_faces(two_faces)
    assert len(faces) == 2 and faces[0].area > faces[1].area
    assert select_face(faces).box[0] < 330 and select_face(faces, 1).box[0] > 330
    assert select_face(faces, 2) is None
    assert select_face(faces, 0, min_face_px=faces[1].size + 1) is faces[0]
    assert select_face(faces, 1, min_face_px=faces[1].size + 1) is None  # the small one is "no face"
    with pytest.raises(InputError):
        select_face(faces, -1)


def test_tiny_face_filtered(media_dir):
    small = cv2.resize(still(media_dir, "grace_hopper_512x512.jpg"), (40, 40), interpolation=cv2.INTER_AREA)
    frame = np.full((200, 200, 3), 128, np.uint8)
    frame[80:120, 80:120] = small
    faces = detect_faces(frame)
    assert all(f.size < 40 for f in faces)
    assert select_face(faces, 0, min_face_px=48) is None


# --------------------------------------------------------------------------------------- alignment
def test_umeyama_matches_naive_least_squares():
    rng = np.random.default_rng(3)
    for _ in range(20):
        src = rng.uniform(0, 300, (5, 2))
        dst = rng.uniform(0, 300, (5, 2))
        np.testing.assert_allclose(umeyama(src, dst), similarity_lstsq(src, dst), atol=1e-9)  # no-reflection case
    # exact recovery of a known similarity (hand-built: scale 0.5, 30 deg, shift (7, -3))
    th = np.deg2rad(30)
    M = np.array([[0.5 * np.cos(th), -0.5 * np.sin(th), 7], [0.5 * np.sin(th), 0.5 * np.cos(th), -3]])
    pts = rng.uniform(0, 100, (5, 2))
    np.testing.assert_allclose(umeyama(pts, transform_points(pts, M)), M, atol=1e-12)


def test_align_transform_on_template_is_identity_and_scales():
    np.testing.assert_allclose(align_transform(ARCFACE_112, 112), np.hstack([np.eye(2), np.zeros((2, 1))]), atol=1e-12)
    M = align_transform(ARCFACE_112, 224)
    np.testing.assert_allclose(M[:, :2], 2 * np.eye(2), atol=1e-12)
    zoom = align_transform(ARCFACE_112, 112, scale=2.0)  # zoom out: face half as big, centred
    np.testing.assert_allclose(transform_points(ARCFACE_112, zoom), template(112, 2.0), atol=1e-9)
    np.testing.assert_allclose(template(112, 2.0).mean(0), (ARCFACE_112.mean(0) - 56) / 2 + 56)


def test_align_real_face_residual(grid_frames):
    lm = detect_faces(grid_frames[0])[0].landmarks5
    M = align_transform(lm, 128)
    resid = np.linalg.norm(transform_points(lm, M) - template(128), axis=1)
    assert resid.mean() < 128 * 0.05  # a frontal face fits the template within 5% of the crop
    c = crop(grid_frames[0], M, 128)
    assert c.shape == (128, 128, 3) and len(detect_faces(c)) == 1


def test_crop_antialias_keeps_geometry(grid_frames):
    """The supersampled crop equals the plain crop up to blur (same pixel-centre geometry)."""
    M = align_transform(detect_faces(grid_frames[0])[0].landmarks5, 32)  # face shrinks ~3x
    a, b = crop(grid_frames[0], M, 32).astype(float), crop(grid_frames[0], M, 32, antialias=False).astype(float)
    assert np.abs(a - b).mean() < 12
    ma, mb = (np.array(np.unravel_index(np.argmax(cv2.GaussianBlur(x.mean(2), (0, 0), 3)), x.shape[:2])) for x in (a, b))
    assert np.abs(ma - mb).max() <= 1


# --------------------------------------------------------------------------------------- smoothing
def test_params_roundtrip_and_fill_missing():
    rng = np.random.default_rng(4)
    p = np.column_stack([rng.uniform(50, 300, 6), rng.uniform(50, 200, 6), rng.uniform(-1, 1, 6), rng.uniform(-3, 3, 6)])
    np.testing.assert_allclose(transforms_to_params(params_to_transforms(p, 64), 64), p, atol=1e-9)
    # hand example: values 0, ?, ?, 3 -> 0, 1, 2, 3; leading/trailing gaps hold the nearest value
    q = np.zeros((6, 4))
    q[1, 0], q[4, 0] = 0.0, 3.0
    filled = fill_missing(q, np.array([False, True, False, False, True, False]))
    np.testing.assert_allclose(filled[:, 0], [0, 0, 1, 2, 3, 3])


def test_smoothing_rotation_wraps():
    th = np.array([3.1, -3.1, 3.1, -3.1])  # jitter across +-pi is small, not a 2*pi spin
    p = np.column_stack([np.zeros((4, 3)), th])
    out = gaussian_smooth(p, 1.0)
    assert np.all(np.abs(np.angle(np.exp(1j * (out[:, 3] - np.pi)))) < 0.1)


def test_jitter_zero_for_steady_pan_and_reduced_by_smoothing():
    n = 30
    pan = np.column_stack([np.linspace(100, 160, n), np.full(n, 80.0), np.zeros(n), np.zeros(n)])
    assert jitter(params_to_transforms(pan, 64), 64) == pytest.approx(0, abs=1e-9)
    noisy = pan + np.random.default_rng(5).normal(0, 2, pan.shape) * [1, 1, 0.02, 0.02]
    raw = jitter(params_to_transforms(noisy, 64), 64)
    smooth = jitter(params_to_transforms(gaussian_smooth(noisy, 2.0), 64), 64)
    assert smooth < 0.3 * raw
    np.testing.assert_array_equal(gaussian_smooth(noisy, 0), noisy)


# --------------------------------------------------------------------------------------- mask + paste
def test_face_mask_shape_range_border():
    m = face_mask(64, feather_px=6)
    assert m.dtype == np.float32 and m.shape == (64, 64)
    assert m.min() == 0 and m.max() == 1
    assert m[[0, -1], :].max() == 0 and m[:, [0, -1]].max() == 0
    c = template(64)[:2].mean(0).round().astype(int)
    assert m[c[1], c[0]] == 1  # between the eyes
    row = m[int(template(64)[2, 1])]  # across the nose: rises monotonically to 1 from the left edge
    left = row[: int(template(64)[2, 0])]
    assert np.all(np.diff(left) >= 0)
    rot = face_mask(64, transform_points(template(64), np.array([[0, -1, 63], [1, 0, 0]], float)), 6)
    assert np.abs(rot - np.rot90(m, -1)).mean() < 0.05  # follows the landmarks (rotated face)


@pytest.mark.parametrize("size, tol", [(256, 1.0), (64, 6.0)])
def test_crop_paste_roundtrip_real_frame(grid_frames, size, tol):
    """No edit: bit-exact outside the warped mask's support; inside, mean abs error < tol
    (bilinear there and back; 64 px crops shrink the face so the round trip blurs it)."""
    frame = grid_frames[5]
    M = align_transform(detect_faces(frame)[0].landmarks5, size)
    mask = face_mask(size)
    out = paste_back(frame, crop(frame, M, size), M, mask)
    a = cv2.warpAffine(mask, M, frame.shape[1::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert np.array_equal(out[a == 0], frame[a == 0])
    err = np.abs(out.astype(int) - frame)[a > 0]
    assert err.mean() < tol


def test_paste_back_puts_edit_inside_mask_only(grid_frames):
    frame = grid_frames[0]
    M = align_transform(detect_faces(frame)[0].landmarks5, 128)
    white = np.full((128, 128, 3), 255, np.uint8)
    mask = face_mask(128)
    out = paste_back(frame, white, M, mask)
    a = cv2.warpAffine(mask, M, frame.shape[1::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert np.all(out[a > 0.999] == 255)
    assert np.array_equal(out[a == 0], frame[a == 0])
    # reference blend in float64 on the whole frame
    fg = cv2.warpAffine(white.astype(np.float64), M, frame.shape[1::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    ref = np.rint(frame * (1 - a[..., None].astype(np.float64)) + fg * a[..., None])
    assert np.abs(out.astype(float) - ref).max() <= 1


def test_paste_back_crop_off_frame_edge(grid_frames):
    frame = grid_frames[0]
    M = align_transform(detect_faces(frame)[0].landmarks5, 128)
    M_off = M.copy()
    M_off[:, 2] += M[:, :2] @ np.array([150.0, 0])  # face partly outside the frame (left edge)
    out = paste_back(frame, np.zeros((128, 128, 3), np.uint8), M_off, face_mask(128))
    assert out.shape == frame.shape and not np.array_equal(out, frame)
    far = M.copy()
    far[:, 2] += M[:, :2] @ np.array([5000.0, 0])
    assert np.array_equal(paste_back(frame, np.zeros((128, 128, 3), np.uint8), far, face_mask(128)), frame)
    np.testing.assert_allclose(invert_affine(invert_affine(M)), M, atol=1e-9)


# --------------------------------------------------------------------------------------- tracking
def test_track_real_clip_smooths_and_interpolates(grid_frames):
    frames = grid_frames.copy()
    frames[[3, 4, 10]] = 0  # frames without a face
    tr = track_video(frames, crop_size=64, sigma=2.0)
    assert tr.n_frames == 24 and tr.n_interpolated == 3 and not tr.detected[[3, 4, 10]].any()
    assert np.isnan(tr.landmarks[3]).all() and tr.landmarks_in_crop(3) is None
    p = transforms_to_params(tr.raw, 64)
    np.testing.assert_allclose(p[3], p[2] + (p[5] - p[2]) / 3, atol=1e-9)  # linear fill between neighbours
    j = tr.jitter()
    assert j["smoothed"] < j["raw"]
    lm = tr.landmarks_in_crop(0)
    assert np.linalg.norm(lm - template(64), axis=1).mean() < 5


def test_track_save_load(grid_frames, tmp_path):
    tr = track_video(grid_frames[:6], crop_size=32, sigma=1.0)
    tr.save(tmp_path / "t.npz")
    back = Track.load(tmp_path / "t.npz")
    assert back.crop_size == 32 and back.sigma == 1.0
    np.testing.assert_array_equal(back.smoothed, tr.smoothed)
    np.testing.assert_array_equal(back.landmarks, tr.landmarks)
    (tmp_path / "bad.npz").write_text("nope")
    with pytest.raises(InputError, match="not a track file"):
        Track.load(tmp_path / "bad.npz")


def test_track_no_face_anywhere_is_input_error():
    with pytest.raises(InputError, match="no face .* in any of 4 frames"):
        track_video(np.zeros((4, 64, 64, 3), np.uint8), path="blank.mp4")


def test_track_face_index_keeps_identity(two_faces):
    frames = np.stack([np.roll(two_faces, k, axis=1) for k in range(0, 8, 2)])
    small = track_video(frames, face_index=1, crop_size=64, sigma=0)
    large = track_video(frames, face_index=0, crop_size=64, sigma=0)
    assert small.n_interpolated == 0 and np.all(small.boxes[:, 0] > 330)
    assert np.all(large.boxes[:, 0] < 330)
    with pytest.raises(InputError, match="face #2"):
        track_video(frames[:1], face_index=2)


def test_odd_size_frame_track_crop_paste(grid_frames):
    frames = np.ascontiguousarray(grid_frames[:4, :287, :359])  # odd height and width
    tr = track_video(frames, crop_size=63, sigma=1.0)
    assert tr.n_interpolated == 0
    mask = face_mask(63)
    out = paste_back(frames[0], crop(frames[0], tr.smoothed[0], 63), tr.smoothed[0], mask)
    assert out.shape == (287, 359, 3)
    a = cv2.warpAffine(mask, tr.smoothed[0], (359, 287), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert np.array_equal(out[a == 0], frames[0][a == 0])
