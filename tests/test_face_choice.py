"""Choosing the face when several are present: by index, the largest over the clip, or the person
in a reference photo (SFace through the recogniser registry)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ipfacediff.errors import InputError
from ipfacediff.face import FaceChoice, track_video


def _still(media_dir, name, crop=None):
    img = cv2.imread(str(media_dir / "stills" / name))[:, :, ::-1]
    return img if crop is None else img[crop]


@pytest.fixture(scope="module")
def two_people(media_dir) -> list[np.ndarray]:
    """6 frames: the astronaut (small, right) alone in frames 0-1, Grace Hopper (large, left) joins
    from frame 2. Tracking by index starts on the astronaut; the largest over the clip is Hopper."""
    hopper = cv2.resize(_still(media_dir, "grace_hopper_512x512.jpg"), (300, 300))
    astronaut = cv2.resize(_still(media_dir, "skimage_astronaut.png", (slice(0, 300), slice(100, 400))), (160, 160))
    frames = []
    for i in range(6):
        canvas = np.full((340, 520, 3), 200, np.uint8)
        canvas[90:250, 350:510] = astronaut
        if i >= 2:
            canvas[20:320, 10:310] = hopper
        frames.append(canvas)
    return frames


def _side(track) -> set[str]:
    centres = (track.boxes[track.detected, 0] + track.boxes[track.detected, 2]) / 2
    return {"left" if c < 330 else "right" for c in centres}


def test_index_follows_the_first_largest_face(two_people):
    track = track_video(two_people, crop_size=64, choice=FaceChoice(index=0))
    assert _side(track) == {"right"} and track.n_detected == 6


def test_largest_over_the_clip(two_people):
    choice = FaceChoice(largest=True)
    track = track_video(two_people, crop_size=64, choice=choice)
    assert _side(track) == {"left"} and track.detected.tolist() == [False, False, True, True, True, True]
    assert choice.chosen["by"] == "largest" and choice.chosen["tracks"] == 2


def _reference(media_dir, photo):
    from ipfacediff.face import detect_faces
    from ipfacediff.recognition import get_recognizer

    rec = get_recognizer("sface")

    def embed(frame, lm5):
        return rec.embed(rec.align(frame, lm5)[None])[0]

    face = detect_faces(photo)[0]
    return FaceChoice(reference=embed(photo, face.landmarks5), embed=embed, min_similarity=0.363)


@pytest.mark.parametrize("who, side", [("skimage_astronaut.png", "right"), ("grace_hopper_512x512.jpg", "left")])
def test_reference_photo_picks_that_person(two_people, media_dir, who, side):
    choice = _reference(media_dir, _still(media_dir, who))  # the full still: a different framing than the clip's
    track = track_video(two_people, crop_size=64, choice=choice)
    assert _side(track) == {side}
    sims = sorted(choice.chosen["similarities"])
    assert choice.chosen["similarity"] == sims[-1] > 0.363 > sims[0]  # SFace's same-person threshold separates them


def test_reference_of_someone_absent_is_refused(two_people, media_dir):
    choice = _reference(media_dir, _still(media_dir, "obama_official_portrait.jpg"))
    with pytest.raises(InputError, match="no face matches the reference photo"):
        track_video(two_people, crop_size=64, choice=choice, path="clip.mp4")
