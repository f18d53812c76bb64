"""The patch-based baseline: the same model on overlapping tiles, blended linearly, on the device.

This is how earlier SR methods reach 4K (and what OP4KSR's patch-free claim is measured against).
The tiling and blending are exactly `op4ksr.evaluate.upscale_tiled`'s (tests/bench check the two
agree), but tiles are accumulated on the model's device so the timing is the model's, not a
host copy per tile. Seams repeat at the tile stride, so the seam score is the periodicity
statistic at that period (op4ksr.periodicity), for the tiled and the patch-free output alike.
"""
from __future__ import annotations

import torch

from op4ksr.evaluate import _ramp, _tile_starts
from op4ksr.periodicity import periodicity


def tile_plan(size: tuple[int, int], scale: int, tile_px: int, overlap_px: int) -> dict:
    """{tile_lr, overlap_lr, period_px, tiles}: LR tile and overlap for output-pixel sizes, the seam
    period in output px (the tile stride) and the number of tiles for an output of `size`."""
    if tile_px % scale or overlap_px % scale:
        raise ValueError(f"tile {tile_px} px and overlap {overlap_px} px must be multiples of the scale {scale}")
    tile, overlap = tile_px // scale, overlap_px // scale
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap {overlap_px} px must be in [0, tile={tile_px} px)")
    h, w = size[0] // scale, size[1] // scale
    rows, cols = _tile_starts(h, tile, tile - overlap), _tile_starts(w, tile, tile - overlap)
    return {"tile_lr": tile, "overlap_lr": overlap, "period_px": (tile - overlap) * scale,
            "tiles": len(rows) * len(cols)}


@torch.inference_mode()
def upscale_tiled(model, x_lr: torch.Tensor, size: tuple[int, int], tile: int, overlap: int) -> torch.Tensor:
    """(1, 3, H, W) float32 on the model's device: LR tiles of `tile` px sharing `overlap` px, each
    upscaled on its own, blended with linear ramps over the overlap (op4ksr.evaluate.upscale_tiled)."""
    h, w = x_lr.shape[-2:]
    H, W = size
    if H % h or W % w or H // h != W // w:
        raise ValueError(f"patch-based inference needs one integer scale; got {w}x{h} -> {W}x{H}")
    s, device = H // h, model.device
    x_lr = x_lr.to(device)
    out = torch.zeros(1, 3, H, W, device=device)
    weight = torch.zeros(1, 1, H, W, device=device)
    for top in _tile_starts(h, tile, tile - overlap):
        for left in _tile_starts(w, tile, tile - overlap):
            th, tw = min(tile, h), min(tile, w)
            patch = model.upscale(x_lr[..., top : top + th, left : left + tw], (th * s, tw * s))  # (1, 3, th*s, tw*s)
            wy = _ramp(th * s, overlap * s, top > 0, top + th < h).to(device)
            wx = _ramp(tw * s, overlap * s, left > 0, left + tw < w).to(device)
            wgt = (wy[:, None] * wx[None, :])[None, None]
            out[..., top * s : (top + th) * s, left * s : (left + tw) * s] += patch * wgt
            weight[..., top * s : (top + th) * s, left * s : (left + tw) * s] += wgt
    return out / weight.clamp_min(1e-8)


@torch.inference_mode()
def seam_score(img: torch.Tensor, period_px: int) -> float:
    """Periodicity of img (1, 3, H, W) at the tile period, scored over the whole image (the default
    1024 px crop would hold too few periods of a 1024 px tile)."""
    return float(periodicity(img.float(), period=period_px, crop=max(img.shape[-2:]))[0])
