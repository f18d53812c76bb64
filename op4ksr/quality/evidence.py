"""Whether an output is still the same picture, per image: the contradiction map, faces and text together.

The per-image fields of the manifest (docs/QUALITY.md, "Where an output changed the picture"): each
check's fields are None with a `*_reason` when it cannot run (a tiny input, no face, no text,
OpenCV or Tesseract not installed under `auto`), never an error that fails the image.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass

import torch

from op4ksr.errors import UserError
from op4ksr.imageops import bicubic_resize
from op4ksr.quality.contradiction import CELL_THRESHOLD, Contradiction, contradiction_maps
from op4ksr.quality.text import TEXT_CHECKS, check_tesseract, text_check
from op4ksr.quality.text_regions import text_regions

FACE_CHECKS = ("off", "on", "auto")


@dataclass(frozen=True)
class EvidenceOptions:
    """report.* settings of the evidence checks (configs/default.yaml)."""

    contradiction_threshold: float = 0.0  # flagged when contradicted_fraction exceeds it (0: any contradicted cell)
    cell_threshold: float = CELL_THRESHOLD  # a cell is contradicted above this many tolerances
    text_check: str = "auto"  # off | on (read every image) | auto (where text_regions finds lines)
    text_threshold: float = 0.02  # flagged when text_cer exceeds it (OCR of 7 px letters wavers: docs/QUALITY.md)
    faces: str = "auto"  # off | on | auto (on when OpenCV is installed)

    def __post_init__(self):
        if self.text_check not in TEXT_CHECKS:
            raise UserError(f"report.text_check {self.text_check!r} is unknown; choose one of {', '.join(TEXT_CHECKS)}")
        if self.faces not in FACE_CHECKS:
            raise UserError(f"report.faces {self.faces!r} is unknown; choose one of {', '.join(FACE_CHECKS)}")
        for name in ("contradiction_threshold", "text_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"report.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.cell_threshold <= 0:
            raise UserError(f"report.cell_threshold must be > 0, got {self.cell_threshold}")

    def check_tools(self) -> None:
        """One-line UserError when a check set to `on` lacks its tool (before a run lists anything)."""
        if self.text_check == "on":
            check_tesseract()
        if self.faces == "on" and importlib.util.find_spec("cv2") is None:
            raise UserError("report.faces=on needs OpenCV: pip install 'op4ksr[evidence]' (or set report.faces=off)")


def _tools_here(options: EvidenceOptions) -> tuple[str | None, str | None]:
    """(why text is not checked, why faces are not) for these options on this machine; None: checked."""
    has_cv2 = importlib.util.find_spec("cv2") is not None
    text = {"off": "report.text_check is off"}.get(options.text_check)
    if text is None and shutil.which("tesseract") is None:
        text = "tesseract-ocr is not installed"
    if text is None and options.text_check == "auto" and not has_cv2:
        text = "OpenCV (the text detector) is not installed"
    faces = {"off": "report.faces is off"}.get(options.faces)
    if faces is None and not has_cv2:
        faces = "OpenCV is not installed"
    return text, faces


@dataclass(frozen=True)
class Evidence:
    """One output's evidence: the manifest fields, and the map itself for the heatmap."""

    fields: dict
    contradiction: Contradiction

    @property
    def flagged(self) -> bool:
        return bool(self.fields["evidence_flagged"])


def _text_fields(lr: torch.Tensor, sr: torch.Tensor, options: EvidenceOptions, why_not: str | None) -> dict:
    if why_not is not None:
        return {"text_cer": None, "text_words": 0, "changed_words": [], "text_reason": why_not, "cpu_text_seconds": 0.0}
    size = tuple(sr.shape[-2:])
    regions = None if options.text_check == "on" else text_regions(lr, size)
    if regions == []:
        return {"text_cer": None, "text_words": 0, "changed_words": [], "text_reason": "no text found",
                "cpu_text_seconds": 0.0}
    if regions is not None:  # one read of the lines' bounding box: two tesseract starts an image at most
        top, left = min(r[0] for r in regions), min(r[1] for r in regions)
        bottom, right = max(r[0] + r[2] for r in regions), max(r[1] + r[3] for r in regions)
        regions = [(top, left, bottom - top, right - left)]
    up = bicubic_resize(lr[None].float(), size)[0].clamp(0, 1)
    return text_check(up, sr, regions)


def evidence(x_sr: torch.Tensor, x_lr: torch.Tensor, cell_px: int = 32,
             options: EvidenceOptions = EvidenceOptions()) -> list[Evidence]:
    """One Evidence per image of x_sr (B, 3, H, W) against its input x_lr (B, 3, h, w), both in [0, 1]: the
    map on x_sr's device, faces and text on the CPU."""
    maps = contradiction_maps(x_sr, x_lr, cell_px, options.cell_threshold)
    return [image_evidence(sr, lr, result, options) for sr, lr, result in zip(x_sr.cpu(), x_lr.cpu(), maps)]


def image_evidence(sr: torch.Tensor, lr: torch.Tensor, result: Contradiction, options: EvidenceOptions) -> Evidence:
    """The Evidence of one output sr (3, H, W) against its input lr (3, h, w) on the CPU, given its map
    (contradiction_maps, computed where the output is: the model's device)."""
    text_why_not, faces_why_not = _tools_here(options)
    fields = result.as_dict()
    if faces_why_not is None:
        from op4ksr.quality.faces import face_scores
        fields |= face_scores(lr, result, tuple(sr.shape[-2:]))
    else:
        fields |= {"faces": [], "face_contradiction": None, "faces_reason": faces_why_not}
    fields |= _text_fields(lr, sr, options, text_why_not)
    fields["evidence_flagged"] = is_flagged(fields, options)
    return Evidence(fields, result)


def manifest_fields(fields: dict) -> dict:
    """Evidence fields as manifest columns (pipeline/manifest/records.py): the worst cell as "WxH+left+top"
    and its score, the faces as a count (their boxes stay in the JSON report as face_boxes), the changed
    words as a JSON list, the reasons why a check did not run joined in evidence_notes."""
    worst = fields["worst_cell"]
    notes = [f"{what}: {fields[key]}" for what, key in (("contradiction", "contradiction_reason"),
                                                         ("faces", "faces_reason"), ("text", "text_reason"))
             if fields.get(key)]
    return {"contradicted_fraction": fields["contradicted_fraction"],
            "worst_cell": None if worst is None else f"{worst['width']}x{worst['height']}+{worst['left']}+{worst['top']}",
            "worst_cell_score": None if worst is None else worst["score"], "added_detail": fields["added_detail"],
            "face_contradiction": fields["face_contradiction"], "faces": len(fields["faces"]),
            "face_boxes": fields["faces"], "text_cer": fields["text_cer"], "text_words": fields["text_words"],
            "changed_words": json.dumps(fields["changed_words"]) if fields["changed_words"] else None,
            "evidence_flagged": fields["evidence_flagged"], "evidence_notes": "; ".join(notes) or None}


def is_flagged(fields: dict, options: EvidenceOptions) -> bool:
    """Whether these evidence fields flag the image: contradicted cells, changed text or a redrawn face."""
    fraction, cer, face = fields.get("contradicted_fraction"), fields.get("text_cer"), fields.get("face_contradiction")
    return bool((fraction is not None and fraction > options.contradiction_threshold)
                or (cer is not None and cer > options.text_threshold)
                or (face is not None and face > options.cell_threshold))
