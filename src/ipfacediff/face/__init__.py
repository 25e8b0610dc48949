"""Faces in frames: YuNet detection, ArcFace-template alignment, temporal smoothing, mask, paste-back.

Typical use (edit a face in a video):

    track = track_video(video.frames, face_index=0, crop_size=512, sigma=2.0)
    mask = face_mask(512)
    for i, frame in enumerate(video.frames):
        c = crop(frame, track.smoothed[i], 512)
        out = paste_back(frame, edit(c), track.smoothed[i], mask)
"""

from .align import ARCFACE_112, align_transform, crop, invert_affine, template, transform_points, transform_scale, umeyama
from .detect import DETECTOR_NAME, YUNET_SHA256, Face, FaceDetector, as_rgb_uint8, detect_faces, select_face, yunet_path
from .mask import face_mask
from .paste import paste_back
from .smooth import gaussian_smooth, jitter, params_to_transforms, transforms_to_params
from .track import FaceChoice, Track, track_video

__all__ = [
    "ARCFACE_112", "DETECTOR_NAME", "YUNET_SHA256", "Face", "FaceChoice", "FaceDetector", "Track", "align_transform",
    "as_rgb_uint8", "crop", "detect_faces", "face_mask", "gaussian_smooth", "invert_affine", "jitter",
    "params_to_transforms", "paste_back", "select_face", "template", "track_video", "transform_points",
    "transform_scale", "transforms_to_params", "umeyama", "yunet_path",
]
