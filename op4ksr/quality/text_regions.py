"""Where an input may hold text, without weights: the regions report.text_check=auto hands to Tesseract.

OpenCV's EAST and DB text detectors need downloaded weights; this is the classic weight-free one
(morphological gradient, Otsu, a horizontal closing that joins letters into lines, line-shaped
boxes kept), on the input's grey levels at the input's size, so it costs little next to reading:
docs/PERFORMANCE.md. It errs towards finding text: a region of texture costs a Tesseract read
that finds no confident word, never a flag.
"""
from __future__ import annotations

import numpy as np
import torch

from op4ksr.extras import require
from op4ksr.imageops import luminance

MIN_LINE_PX, MAX_LINE_PX = 6, 120  # height of a line of text in input px
MIN_FILL = 0.4  # share of a line's box that its strokes' gradient covers


def text_regions(x_lr: torch.Tensor, size: tuple[int, int], margin_px: int = 16) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) in output px (output `size`) of the lines of text found in x_lr (C, h, w)
    in [0, 1], grown by margin_px and clipped to the output; [] when it holds none."""
    cv2 = require("cv2", "evidence", "report.text_check=auto")
    gray = (luminance(x_lr[None].float().cpu())[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    gradient = cv2.morphologyEx(np.ascontiguousarray(gray), cv2.MORPH_GRADIENT,
                                cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    _, strokes = cv2.threshold(gradient, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    lines = cv2.morphologyEx(strokes, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 1)))
    contours, _ = cv2.findContours(lines, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    h, w = gray.shape
    sy, sx = size[0] / h, size[1] / w
    regions = []
    for contour in contours:
        left, top, width, height = cv2.boundingRect(contour)
        if not MIN_LINE_PX <= height <= MAX_LINE_PX or width < 2 * height:
            continue
        if cv2.countNonZero(strokes[top:top + height, left:left + width]) < MIN_FILL * width * height:
            continue
        t, l = max(0, int(top * sy) - margin_px), max(0, int(left * sx) - margin_px)
        b, r = min(size[0], int((top + height) * sy) + margin_px), min(size[1], int((left + width) * sx) + margin_px)
        regions.append((t, l, b - t, r - l))
    return merge_regions(regions)


def merge_regions(regions: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Regions (top, left, height, width) with overlapping ones merged into their bounding box."""
    merged = list(regions)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]:
                    top, left = min(a[0], b[0]), min(a[1], b[1])
                    bottom, right = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
                    merged[i] = (top, left, bottom - top, right - left)
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged
