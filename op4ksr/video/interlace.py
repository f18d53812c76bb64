"""A measured comb score, for interlaced video whose stream says progressive or nothing.

In a woven frame the two fields were taken 1/50 or 1/60 s apart, so where anything moves each
line differs more from the lines just above and below it (the other field) than from the lines
two above and below (its own field). Per frame, on full-resolution luma:
    comb = mean |2 y[i] - y[i-1] - y[i+1]|  /  mean |2 y[i] - y[i-2] - y[i+2]|
A progressive frame scores under 1: nearer lines are more alike (a smooth picture ~0.25-0.75, pure
grain or noise ~1, where both differences have the same spread). A combed one scores above: 1.25-1.4
for the tests' soft panning texture, more for sharp footage. A video is taken for interlaced when
at least COMBED_SHARE of its frames score over COMB_RATIO. Still
frames of interlaced video do not comb, and a picture of fine horizontal lines can (a false
refusal names the measure, so the stream can be tagged progressive and rerun).
"""
from __future__ import annotations

import torch

COMB_RATIO = 1.2
COMBED_SHARE = 0.5


def comb_score(rgb: torch.Tensor) -> float:
    """The comb score (module docstring) of a (3, H, W) frame in [0, 1]; 0 for frames under 5 lines."""
    luma = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]  # (H, W)
    if luma.shape[0] < 5:
        return 0.0
    centre = luma[2:-2]
    other_field = (2 * centre - luma[1:-3] - luma[3:-1]).abs().mean()
    same_field = (2 * centre - luma[:-4] - luma[4:]).abs().mean()
    return float(other_field / same_field.clamp_min(1e-6))


class CombCounter:
    """Counts combed frames as they are decoded."""

    def __init__(self):
        self.frames = self.combed = 0
        self.largest = 0.0

    def add(self, rgb: torch.Tensor) -> None:
        score = comb_score(rgb)
        self.frames += 1
        self.combed += score > COMB_RATIO
        self.largest = max(self.largest, score)

    @property
    def interlaced(self) -> bool:
        return self.frames > 0 and self.combed >= COMBED_SHARE * self.frames
