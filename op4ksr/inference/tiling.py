"""The patch-based baseline: a model run on overlapping LR tiles, blended linearly.

This is how earlier SR methods reach 4K, and what OP4KSR's patch-free claim is measured
against (op4ksr.evaluation.evaluate, bench/gpu_4k.py). Seams repeat at the tile stride, so their score is
the periodicity statistic at that period.
"""
from __future__ import annotations

import torch


def tile_starts(n: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of `tile` px every `stride` px covering n px, the last flush with the end."""
    if n <= tile:
        return [0]
    return list(range(0, n - tile, stride)) + [n - tile]


def ramp(length: int, fade: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """(length,) blending weight: rises over `fade` px where a neighbour tile overlaps, else flat."""
    w = torch.ones(length)
    if fade > 0:
        rise = (torch.arange(fade) + 0.5) / fade
        if at_start:
            w[:fade] = rise
        if at_end:
            w[-fade:] = rise.flip(0)
    return w


def tile_plan(size: tuple[int, int], scale: int, tile_px: int, overlap_px: int) -> dict:
    """{tile_lr, overlap_lr, period_px, tiles}: LR tile and overlap for output-pixel sizes, the seam
    period in output px (the tile stride) and the number of tiles for an output of `size`."""
    if tile_px % scale or overlap_px % scale:
        raise ValueError(f"tile {tile_px} px and overlap {overlap_px} px must be multiples of the scale {scale}")
    tile, overlap = tile_px // scale, overlap_px // scale
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap {overlap_px} px must be in [0, tile={tile_px} px)")
    h, w = size[0] // scale, size[1] // scale
    rows, cols = tile_starts(h, tile, tile - overlap), tile_starts(w, tile, tile - overlap)
    return {"tile_lr": tile, "overlap_lr": overlap, "period_px": (tile - overlap) * scale,
            "tiles": len(rows) * len(cols)}


@torch.inference_mode()
def upscale_tiled(model, x_lr: torch.Tensor, size: tuple[int, int], tile: int, overlap: int,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """(1, 3, H, W) float32 on `device` (default: the model's): LR tiles of `tile` px sharing `overlap` px,
    each upscaled on its own, blended with linear ramps over the overlap."""
    h, w = x_lr.shape[-2:]
    H, W = size
    if H % h or W % w or H // h != W // w:
        raise ValueError(f"patch-based inference needs one integer scale; got {w}x{h} -> {W}x{H}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap {overlap} must be in [0, tile={tile})")
    s = H // h
    device = torch.device(device) if device is not None else getattr(model, "device", x_lr.device)
    out = torch.zeros(1, 3, H, W, device=device)
    weight = torch.zeros(1, 1, H, W, device=device)
    for top in tile_starts(h, tile, tile - overlap):
        for left in tile_starts(w, tile, tile - overlap):
            th, tw = min(tile, h), min(tile, w)
            patch = model.upscale(x_lr[..., top : top + th, left : left + tw], (th * s, tw * s))  # (1, 3, th*s, tw*s)
            wy = ramp(th * s, overlap * s, top > 0, top + th < h).to(device)
            wx = ramp(tw * s, overlap * s, left > 0, left + tw < w).to(device)
            wgt = (wy[:, None] * wx[None, :])[None, None]
            out[..., top * s : (top + th) * s, left * s : (left + tw) * s] += patch.to(device) * wgt
            weight[..., top * s : (top + th) * s, left * s : (left + tw) * s] += wgt
    return out / weight.clamp_min(1e-8)
