"""Faces in the input and each face's own contradiction figure: a proxy for "the face was redrawn", not identity.

OpenCV's bundled Haar cascade (haarcascade_frontalface_default.xml, inside the opencv wheel: no
weights are fetched) finds frontal faces in the input; each face's figure is the largest cell score
of the contradiction map over its box (op4ksr.quality.contradiction). It says whether the pixels
there still downscale to the input's, not whether the person is still recognisable: a face can keep
its low band and change its expression in the detail above it (that is `added_detail`'s domain).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from op4ksr.extras import require
from op4ksr.imageops import luminance
from op4ksr.quality.contradiction import Contradiction, region_score

MIN_FACE_PX = 24  # in input px: the cascade's own window; smaller faces are not looked for
CASCADE = "haarcascade_frontalface_default.xml"


@functools.lru_cache(maxsize=1)
def _cascade():
    cv2 = require("cv2", "evidence", "The face check")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's {CASCADE} did not load from {cv2.data.haarcascades}")
    return cascade


def find_faces(x_lr: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) in input px of each frontal face in x_lr (C, h, w) in [0, 1]."""
    gray = (luminance(x_lr[None].float().cpu())[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    found = _cascade().detectMultiScale(np.ascontiguousarray(gray), scaleFactor=1.1, minNeighbors=5,
                                        minSize=(MIN_FACE_PX, MIN_FACE_PX))
    return [(int(y), int(x), int(h), int(w)) for x, y, w, h in found]


def face_scores(x_lr: torch.Tensor, result: Contradiction, size: tuple[int, int]) -> dict:
    """{"faces": [{"top", "left", "height", "width" (output px), "score"}], "face_contradiction": the
    largest score or None, "faces_reason"} for input x_lr (C, h, w) and its output's map (output `size`)."""
    if result.scores is None:
        return {"faces": [], "face_contradiction": None, "faces_reason": result.reason}
    h, w = x_lr.shape[-2:]
    faces = []
    for top, left, height, width in find_faces(x_lr):
        box = (top * size[0] // h, left * size[1] // w, -(-height * size[0] // h), -(-width * size[1] // w))
        faces.append(dict(zip(("top", "left", "height", "width"), box), score=region_score(result, box, size)))
    if not faces:
        return {"faces": [], "face_contradiction": None, "faces_reason": "no frontal face found"}
    return {"faces": faces, "face_contradiction": max(f["score"] for f in faces), "faces_reason": None}
