"""The seam score of the patch-based baseline (op4ksr.inference.tiling), for bench/gpu_4k.py.

Seams repeat at the tile stride, so the seam score is the periodicity statistic at that period,
for the tiled and the patch-free output alike.
"""
from __future__ import annotations

import torch

from op4ksr.quality.periodicity import periodicity


@torch.inference_mode()
def seam_score(img: torch.Tensor, period_px: int) -> float:
    """Periodicity of img (1, 3, H, W) at the tile period, scored over the whole image (the default
    1024 px crop would hold too few periods of a 1024 px tile)."""
    return float(periodicity(img.float(), period=period_px, crop=max(img.shape[-2:]))[0])
