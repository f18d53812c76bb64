"""Output sizes: the size policy of the sr.* config, and its limits. Pure Python (no torch), so
the CPU stages that plan sizes before the model (pipeline/run/fetch.py) start fast and stay small."""
from __future__ import annotations

from dataclasses import dataclass

from op4ksr.errors import UserError


class OutputSizeError(UserError):
    """The requested output is too small or too large for this run's limits."""


def output_size(height: int, width: int, scale: float | None = None, long_side: int | None = None) -> tuple[int, int]:
    """(H, W) of the output for an input of (height, width): by `scale` or by `long_side`, never both."""
    if (scale is None) == (long_side is None):
        raise ValueError(f"give exactly one of scale={scale} and long_side={long_side}")
    if long_side is not None:
        scale = long_side / max(height, width)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return max(1, round(height * scale)), max(1, round(width * scale))


def plan_output_size(
    height: int,
    width: int,
    *,
    scale: float | None = 4,
    long_side: int | None = None,
    min_side: int = 32,
    max_megapixels: float = 40.0,
) -> tuple[int, int]:
    """(H, W) for an input of (height, width) under the size policy; OutputSizeError if out of limits."""
    size = output_size(height, width, scale=None if long_side else scale, long_side=long_side)
    if min(size) < min_side:
        raise OutputSizeError(f"output {size[1]}x{size[0]} has a side under the minimum of {min_side} px")
    megapixels = size[0] * size[1] / 1e6
    if megapixels > max_megapixels:
        raise OutputSizeError(
            f"output {size[1]}x{size[0]} = {megapixels:.1f} MP is over sr.max_output_megapixels={max_megapixels:g}"
        )
    return size


@dataclass(frozen=True, kw_only=True)
class SizePolicy:
    """How output sizes are chosen and bounded (the sr.* config, built by jobs/specs.py); one object for every caller."""

    scale: float | None  # None: long_side decides
    long_side: int | None
    min_side: int
    max_megapixels: float
    max_input_pixels: int  # larger inputs (or decompression bombs) are refused before decoding

    def plan(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) for an input of (height, width); OutputSizeError if out of limits."""
        return plan_output_size(height, width, scale=self.scale, long_side=self.long_side,
                                min_side=self.min_side, max_megapixels=self.max_megapixels)
