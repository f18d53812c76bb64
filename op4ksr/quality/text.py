"""Text that must read the same: Tesseract reads the bicubic upscale and the output; the words differ or not.

The bicubic upscale is what the input says at the output's size; where Tesseract reads a word
there with confidence >= MIN_CONFIDENCE, the output's reading at the same place is compared with
it. text_cer = edit distance / characters over those words (0: every word reads the same). Tesseract
is Debian's `tesseract-ocr` with its English data (`make` installs it), run as a process (its TSV
output; its CPU time from wait4, so the ledger's CPU quality includes it).
Docs and cost: docs/QUALITY.md ("Text that must read the same"), docs/PERFORMANCE.md.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from op4ksr.errors import UserError

MIN_CONFIDENCE = 80  # Tesseract's word confidence (0-100) for a word of the input to count
TEXT_CHECKS = ("off", "on", "auto")


class MissingTesseractError(UserError):
    """report.text_check=on needs the tesseract program."""


def check_tesseract() -> None:
    """MissingTesseractError (one line, naming the package) unless the tesseract program is installed."""
    if shutil.which("tesseract") is None:
        raise MissingTesseractError("report.text_check=on needs the tesseract program: install Debian's "
                                    "'tesseract-ocr' and 'tesseract-ocr-eng' (make does, as root), "
                                    "or set report.text_check=off")


@dataclass(frozen=True)
class Word:
    """One word Tesseract read: its text, confidence and box (top, left, height, width) in px."""

    text: str
    confidence: float
    box: tuple[int, int, int, int]


def read_words(rgb: torch.Tensor, offset: tuple[int, int] = (0, 0)) -> tuple[list[Word], float]:
    """(the words Tesseract reads in rgb (3, H, W) in [0, 1], boxes shifted by offset (top, left); the CPU
    seconds the tesseract process spent, which the caller's thread_time cannot see)."""
    pixels = (rgb.float().clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
    with tempfile.TemporaryDirectory(prefix="op4ksr-ocr-") as folder:
        image = Path(folder) / "in.png"
        Image.fromarray(np.ascontiguousarray(pixels)).save(image, compress_level=1)
        # one thread: the actor's CPUs are shared with the encode and upload threads
        process = subprocess.Popen(["tesseract", str(image), "stdout", "-l", "eng", "--psm", "11", "tsv"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "OMP_THREAD_LIMIT": "1"})
        tsv = process.stdout.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"tesseract exited with status {process.returncode}")
    return _parse_tsv(tsv, offset), usage.ru_utime + usage.ru_stime


def _parse_tsv(tsv: str, offset: tuple[int, int]) -> list[Word]:
    """The words (level 5 rows with text) of Tesseract's TSV output."""
    words = []
    for line in tsv.splitlines()[1:]:
        cells = line.split("\t")
        if len(cells) < 12 or cells[0] != "5":
            continue
        left, top, width, height, conf, text = int(cells[6]), int(cells[7]), int(cells[8]), int(cells[9]), cells[10], cells[11]
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
    `regions` (top, left, height, width in output px, e.g. from op4ksr.quality.text_regions), with
    "cpu_text_seconds": the tesseract processes' CPU time."""
    if regions is None:
        regions = [(0, 0, *x_sr.shape[-2:])]
    reference, output, cpu = [], [], 0.0
    for top, left, height, width in regions:
        for image, words in ((x_up, reference), (x_sr, output)):
            found, seconds = read_words(image[:, top:top + height, left:left + width], (top, left))
            words += found
            cpu += seconds
    return compare_readings(reference, output) | {"cpu_text_seconds": cpu}
