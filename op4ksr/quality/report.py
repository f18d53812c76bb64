"""The no-reference quality of outputs beside the periodicity report: NIQE and colour shift against the input.

Definitions: docs/QUALITY.md ("Quality without ground truth"). The periodicity fields and
lr_consistency_psnr come from op4ksr.quality.periodicity_report.quality_report; these complete the per-image report.
"""
from __future__ import annotations

import math

import torch

from op4ksr.quality.niqe import niqe_batch


def colour_shift(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(B,) largest difference of a channel's mean between out (B, C, H, W) and ref (B, C, h, w), both in
    [0, 1], in [0, 1] units: the colour cast of out against ref (sizes may differ; a mean needs no resize)."""
    if out.shape[:2] != ref.shape[:2]:
        raise ValueError(f"out {tuple(out.shape)} and ref {tuple(ref.shape)} need the same batch and channels")
    return (out.float().mean((-2, -1)) - ref.float().to(out.device).mean((-2, -1))).abs().amax(dim=1)


def no_reference_scores(x_sr: torch.Tensor, x_lr: torch.Tensor) -> list[dict]:
    """Per image of x_sr (B, 3, H, W) with its input x_lr (B, 3, h, w), both in [0, 1]: {"niqe": NIQE of
    the output (None below 96 x 192 px or when flat), "colour_shift": colour_shift(x_sr, x_lr)}.
    NIQE runs on the CPU (about 0.7 CPU-s for a 4096x4096 output, docs/PERFORMANCE.md)."""
    shifts = colour_shift(x_sr, x_lr).tolist()
    scores = niqe_batch(x_sr)
    return [{"niqe": None if math.isnan(n) else n, "colour_shift": c} for n, c in zip(scores, shifts)]
