"""Five-point alignment templates, one per recogniser family (fit with `face.align.umeyama`).

Point order everywhere (YuNet's, MTCNN's and InsightFace's): eye on the image left, eye on the image
right, nose tip, mouth corner on the image left, mouth corner on the image right; pixel coordinates
in the recogniser's input crop.

- ArcFace 112x112: InsightFace's canonical template (SFace and CosFace/ArcFace ONNX models use it).
- dlib 150x150 chip (padding 0.25): dlib aligns its own 5 points (eye corners, nose base) onto its
  mean face. Expressed in our (YuNet) 5 points it is their mean position on dlib's own chips
  (`derive_templates`: 49 faces from the shared media, per-point std 2-6 px as head pose varies).
- Box crops (FaceNet, VGG-Face): those networks were trained on detector boxes, not landmark
  alignment. `box_template` places the mean YuNet landmark position inside the MTCNN box
  (`BOX_UNIT`, std 0.02-0.07 of the box side) into a crop where the box fills `fill` of the side,
  aspect kept (`BOX_ASPECT`, mean MTCNN box height / width = 1.36) or stretched to square.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..face.align import ARCFACE_112, umeyama  # noqa: F401  (re-exported: the 112x112 template)

# Derived by `derive_templates` (see module docstring); kept as constants so loading needs no detector.
DLIB_CHIP_150 = np.array(
    [[49.97, 48.94], [108.67, 49.50], [82.79, 81.74], [53.32, 107.92], [102.16, 108.47]], dtype=np.float64
)
BOX_UNIT = np.array(
    [[0.2800, 0.4048], [0.7419, 0.3890], [0.5291, 0.6016], [0.3169, 0.7511], [0.7329, 0.7462]], dtype=np.float64
)
BOX_ASPECT = 1.364


def box_template(size: int, fill: float = 1.0, keep_aspect: bool = False) -> np.ndarray:
    """Template for a crop of side `size` in which a detector box spans `fill` of the crop height.

    keep_aspect=False: the box is stretched to a square (facenet's resize of the box crop);
    keep_aspect=True: the box keeps its mean aspect and is centred (deepface's letterboxed resize).
    """
    h = fill * size
    w = h / BOX_ASPECT if keep_aspect else h
    x0, y0 = (size - w) / 2.0, (size - h) / 2.0
    return np.stack([x0 + BOX_UNIT[:, 0] * w, y0 + BOX_UNIT[:, 1] * h], axis=1)


def derive_templates(images: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """Recompute BOX_UNIT, BOX_ASPECT and DLIB_CHIP_150 from RGB images with one main face each.

    Landmarks are YuNet's (`face.detect_faces`, what the metrics align with at run time); boxes are
    MTCNN's (facenet-pytorch's packaged weights: the detector FaceNet crops were made with); chips
    are dlib's own (packaged 5-point shape predictor + get_face_chip, 150 px, padding 0.25).
    Run by `python -m ipfacediff.recognition.templates MEDIA_DIR`.
    """
    import dlib
    import face_recognition_models as frm
    from facenet_pytorch import MTCNN

    from ..face import detect_faces

    mtcnn = MTCNN(keep_all=True, device="cpu")
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    unit, aspect, chip_pts = [], [], []
    for img in images:
        img = np.ascontiguousarray(img)
        faces = detect_faces(img)
        boxes, probs = mtcnn.detect(img)
        if not faces or boxes is None:
            continue
        lm = faces[0].landmarks5
        k = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
        x1, y1, x2, y2 = boxes[k].astype(float)
        unit.append(np.stack([(lm[:, 0] - x1) / (x2 - x1), (lm[:, 1] - y1) / (y2 - y1)], axis=1))
        aspect.append((y2 - y1) / (x2 - x1))
        shape = predictor(img, dlib.rectangle(int(x1), int(y1), int(x2), int(y2)))
        chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
        on_chip = detect_faces(chip)
        if on_chip:
            chip_pts.append(on_chip[0].landmarks5)
    if not unit:
        raise ValueError("no face found in any image")
    return {
        "BOX_UNIT": np.mean(unit, axis=0), "BOX_UNIT_std": np.std(unit, axis=0),
        "BOX_ASPECT": np.array(np.mean(aspect)),
        "DLIB_CHIP_150": np.mean(chip_pts, axis=0) if chip_pts else np.full((5, 2), np.nan),
        "DLIB_CHIP_150_std": np.std(chip_pts, axis=0) if chip_pts else np.full((5, 2), np.nan),
        "n_faces": np.array(len(unit)), "n_chips": np.array(len(chip_pts)),
    }


def _main() -> None:
    import argparse

    from ..video import iter_frames

    ap = argparse.ArgumentParser(description="Recompute the derived alignment templates from face media.")
    ap.add_argument("media", help="folder with stills/*.{png,jpg} and videos/* (e.g. ../shared/media)")
    ap.add_argument("--every", type=int, default=15, help="use every k-th video frame")
    args = ap.parse_args()
    from pathlib import Path

    from PIL import Image

    root = Path(args.media)

    def images():
        for p in sorted((root / "stills").glob("*")):
            yield np.asarray(Image.open(p).convert("RGB"))
        for p in sorted((root / "videos").glob("*")):
            for i, frame in enumerate(iter_frames(p)):
                if i % args.every == 0:
                    yield frame

    for k, v in derive_templates(images()).items():
        print(k, np.round(v, 4).tolist())


if __name__ == "__main__":
    _main()
