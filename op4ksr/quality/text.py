"""Text that must read the same: Tesseract reads the bicubic upscale and the output; the words differ or not.

The bicubic upscale is what the input says at the output's size; where Tesseract reads a word
there with confidence >= MIN_CONFIDENCE, the output's reading at the same place is compared with
it. text_cer = edit distance / characters over those words (0: every word reads the same). Tesseract
is Debian's `tesseract-ocr` with its English data (`make` installs it), driven through pytesseract.
Docs and cost: docs/QUALITY.md ("Text that must read the same"), docs/PERFORMANCE.md.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import torch

from op4ksr.errors import UserError
from op4ksr.extras import require

MIN_CONFIDENCE = 80  # Tesseract's word confidence (0-100) for a word of the input to count
TEXT_CHECKS = ("off", "on", "auto")


class MissingTesseractError(UserError):
    """report.text_check=on needs the tesseract program."""


def check_tesseract() -> None:
    """MissingTesseractError (one line, naming the package) unless tesseract and pytesseract are here."""
    if shutil.which("tesseract") is None:
        raise MissingTesseractError("report.text_check=on needs the tesseract program: install Debian's "
                                    "'tesseract-ocr' and 'tesseract-ocr-eng' (make does, as root), "
                                    "or set report.text_check=off")
    require("pytesseract", "evidence", "report.text_check")


@dataclass(frozen=True)
class Word:
    """One word Tesseract read: its text, confidence and box (top, left, height, width) in px."""

    text: str
    confidence: float
    box: tuple[int, int, int, int]


def read_words(rgb: torch.Tensor, offset: tuple[int, int] = (0, 0)) -> list[Word]:
    """The words Tesseract reads in rgb (3, H, W) in [0, 1], boxes shifted by offset (top, left)."""
    pytesseract = require("pytesseract", "evidence", "report.text_check")
    pixels = (rgb.float().clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
    data = pytesseract.image_to_data(np.ascontiguousarray(pixels), lang="eng", config="--psm 11",
                                     output_type=pytesseract.Output.DICT)
    words = []
    for text, conf, top, left, height, width in zip(data["text"], data["conf"], data["top"], data["left"],
                                                    data["height"], data["width"]):
        if text.strip() and any(c.isalnum() for c in text):
            words.append(Word(text.strip(), float(conf), (top + offset[0], left + offset[1], height, width)))
    return words


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between a and b (insertions, deletions, substitutions)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _overlaps(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> bool:
    """Whether other's centre lies inside box (both top, left, height, width)."""
    cy, cx = other[0] + other[2] / 2, other[1] + other[3] / 2
    return box[0] <= cy <= box[0] + box[2] and box[1] <= cx <= box[1] + box[3]


def compare_readings(reference: list[Word], output: list[Word]) -> dict:
    """{"text_cer", "text_words" (confident words compared), "changed_words": [{"input", "output", "top",
    "left", "height", "width"}], "text_reason"}: each confident word of the reference against the output's
    words centred in its box (joined left to right; "" where the output has none)."""
    confident = [w for w in reference if w.confidence >= MIN_CONFIDENCE]
    if not confident:
        return {"text_cer": None, "text_words": 0, "changed_words": [], "text_reason": "no confidently read words"}
    errors, chars, changed = 0, 0, []
    for word in confident:
        there = sorted((w for w in output if _overlaps(word.box, w.box) or _overlaps(w.box, word.box)), key=lambda w: w.box[1])
        read = " ".join(w.text for w in there)
        distance = edit_distance(word.text, read)
        errors, chars = errors + min(distance, len(word.text)), chars + len(word.text)
        if distance:
            changed.append({"input": word.text, "output": read} | dict(zip(("top", "left", "height", "width"), word.box)))
    return {"text_cer": round(errors / chars, 4), "text_words": len(confident), "changed_words": changed,
            "text_reason": None}


def text_check(x_up: torch.Tensor, x_sr: torch.Tensor,
               regions: list[tuple[int, int, int, int]] | None = None) -> dict:
    """compare_readings of the bicubic upscale x_up and the output x_sr (3, H, W), read whole or only in
    `regions` (top, left, height, width in output px, e.g. from op4ksr.quality.text_regions)."""
    if regions is None:
        regions = [(0, 0, *x_sr.shape[-2:])]
    reference, output = [], []
    for top, left, height, width in regions:
        reference += read_words(x_up[:, top:top + height, left:left + width], (top, left))
        output += read_words(x_sr[:, top:top + height, left:left + width], (top, left))
    return compare_readings(reference, output)
