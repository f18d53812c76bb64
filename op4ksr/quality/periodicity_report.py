"""The per-image periodicity report: the statistic of periodicity.py on tiles covering the whole
output, each against the same tile of its input's bicubic upscale, and the worst tile reported
(docs/PERIODICITY.md), with the output's consistency with its input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from op4ksr.imageops import bicubic_resize, luminance, psnr
from op4ksr.quality.periodicity import (DEFAULT_CLIP, DEFAULT_CROP, DEFAULT_SIGMA, MAPS, OVER_K, axis_autocorr,
                                        check_image, crop_box, crop_to_box, detail_maps,
                                        dominant_period_from_autocorr, periodicity_from_autocorr, work_dtype)

DEFAULT_THRESHOLD = 0.04  # = report.threshold in configs/default.yaml, chosen by bench/periodicity_eval.py
PSNR_CAP_DB = 100.0  # reports store min(psnr, cap): identical images give a finite, JSON-safe value


def _source_window(n_in: int, n_out: int, start: int, length: int) -> tuple[int, int, int, int]:
    """(i0, i1, o0, o1): input rows [i0, i1) whose resize is output rows [o0, o1) of the full resize
    (i0, i1 on the grid where input and output pixel edges coincide) covering [start, start + length)
    plus the resize kernel's support."""
    step_in = n_in // math.gcd(n_in, n_out)
    step_out = n_out // math.gcd(n_in, n_out)
    margin = math.ceil(2 * max(1.0, n_in / n_out)) + 2  # input px; bicubic support is 2 px (more when shrinking)
    first = math.floor(start * n_in / n_out) - margin
    last = math.ceil((start + length) * n_in / n_out) + margin
    k0 = max(0, first // step_in)
    k1 = min(-(-n_in // step_in), -(-last // step_in))
    i0, i1 = k0 * step_in, min(n_in, k1 * step_in)
    return i0, i1, k0 * step_out, (n_out if i1 == n_in else k1 * step_out)


def upscaled_crop(x_lr: torch.Tensor, size: tuple[int, int], box: tuple[int, int, int, int]) -> torch.Tensor:
    """(B, C, h, w) = bicubic_resize(x_lr, size) cropped to box (top, left, h, w), resizing only the
    input window that the box needs (equal to the full resize up to float rounding)."""
    top, left, h, w = box
    r0, r1, o_r0, o_r1 = _source_window(x_lr.shape[-2], size[0], top, h)
    c0, c1, o_c0, o_c1 = _source_window(x_lr.shape[-1], size[1], left, w)
    window = bicubic_resize(x_lr[..., r0:r1, c0:c1], (o_r1 - o_r0, o_c1 - o_c0))
    return crop_to_box(window, (top - o_r0, left - o_c0, h, w))


def tile_grid(h: int, w: int, tile: int, multiple: int) -> tuple[list[int], list[int], int, int]:
    """(tops, lefts, th, tw): equal tiles of crop_box's size (sides at most `tile`, multiples of
    `multiple`) spread evenly over the image, first at 0 and last at the far edge, so that they cover
    it but for less than `multiple` px; neighbours overlap where a side is not a whole number of tiles."""
    _, _, th, tw = crop_box(h, w, tile, multiple)

    def starts(n: int, side: int) -> list[int]:
        count = max(1, math.ceil((n - multiple) / side))
        if count == 1:
            return [(n - side) // 2]  # one tile: the centre crop
        return [round(i * (n - side) / (count - 1)) for i in range(count)]

    return starts(h, th), starts(w, tw), th, tw


def _tiles(y: torch.Tensor, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """(B * T, C, th, tw) tiles of y (B, C, H, W), image-major."""
    return torch.stack([crop_to_box(y, box) for box in boxes], dim=1).flatten(0, 1)


@dataclass(frozen=True)
class QualityReport:
    """Periodicity quality of one output image (docs/PERIODICITY.md), scored on the worst of the tiles that
    cover it (ap_tile_map holds every tile's ap_excess, rows top to bottom)."""

    period_px: int
    ap_score_out: float  # periodicity of the output at period_px (the worst tile's)
    ap_score_in: float  # periodicity of the bicubic upscaled input at the same lags, same tile
    ap_excess: float  # max(0, ap_score_out - ap_score_in), the largest over the tiles
    dominant_period_px: int  # peak-search period of the worst tile of the output (0: no lag fits)
    lr_consistency_psnr: float  # dB, output downscaled to the input size vs the input; capped at PSNR_CAP_DB
    flagged: bool  # ap_excess > threshold
    ap_tile_map: tuple[tuple[float, ...], ...] = ()  # ap_excess per tile, (rows, cols) of tile_grid

    def as_dict(self) -> dict:
        """Plain JSON-safe values: Python floats/ints/bools, non-finite floats as None, the map as lists."""
        out = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in self.__dict__.items()}
        out["ap_tile_map"] = [list(row) for row in self.ap_tile_map]
        return out


def _tile_scores(out_tiles: torch.Tensor, in_tiles: torch.Tensor | None, period_px: int, stat: dict,
                 chunk: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(score_out, score_in, dominant), each (N,), of N output tiles and their input tiles
    (N, 1 or 3, th, tw; None: score_in 0); `chunk` tiles at a time bound the FFT memory."""
    def lines(t: torch.Tensor):  # (n, M, tw), (n, M, th)
        return axis_autocorr(detail_maps(t, stat["sigma"], stat["clip"], stat["maps"]))

    def score(rho) -> torch.Tensor:
        return periodicity_from_autocorr(rho, period_px, stat["max_k"], stat["neighbour_offset"], None, stat["over_k"])

    outs, ins, dominants = [], [], []
    for start in range(0, len(out_tiles), chunk):
        rho_out = lines(out_tiles[start:start + chunk])
        outs.append(score(rho_out))
        ins.append(torch.zeros_like(outs[-1]) if in_tiles is None else score(lines(in_tiles[start:start + chunk])))
        dominants.append(dominant_period_from_autocorr(rho_out, stat["min_period"], stat["max_period"],
                                                       stat["neighbour_offset"]))
    return torch.cat(outs), torch.cat(ins), torch.cat(dominants)


@dataclass(frozen=True)
class TileScores:
    """Periodicity of the tiles that cover each image (tile_grid; boxes row-major, `rows` x `cols`)."""

    boxes: list[tuple[int, int, int, int]]  # (top, left, height, width) of each tile
    rows: int
    cols: int
    score_out: torch.Tensor  # (B, T) periodicity of the image's tiles at the period
    score_in: torch.Tensor  # (B, T) of the same tiles of its input's bicubic upscale; 0 without an input
    dominant: torch.Tensor  # (B, T) int64 peak-search period of the image's tiles

    has_input: bool  # False: score_in is 0 and the scores are absolute

    @property
    def excess(self) -> torch.Tensor:
        """(B, T) max(0, score_out - score_in)."""
        return (self.score_out - self.score_in).clamp_min(0)

    def worst(self) -> torch.Tensor:
        """(B, 1) index of each image's worst tile: the largest ap_excess (the largest score without an input)."""
        return (self.excess if self.has_input else self.score_out).argmax(dim=1, keepdim=True)


@torch.no_grad()
def score_tiles(x_sr: torch.Tensor, x_lr: torch.Tensor | None, period_px: int = 32, *, max_k: int = 4,
                neighbour_offset: float = 0.5, sigma: float = DEFAULT_SIGMA, clip: float | None = DEFAULT_CLIP,
                maps: tuple[str, ...] = MAPS, crop: int = DEFAULT_CROP, over_k: str = OVER_K, min_period: int = 8,
                max_period: int = 128) -> TileScores:
    """TileScores of x_sr (B, 1 or 3, H, W) in tiles of at most `crop` px a side covering it (tile_grid);
    each tile's score_in is scored on the same tile of x_up = bicubic_resize(x_lr, (H, W)), of which only
    the tiles' windows are computed (on the input's luminance: both are linear, a third of the work).
    x_lr None: no input, score_in is 0 (absolute scores)."""
    check_image(x_sr, "x_sr")
    if x_lr is not None:
        check_image(x_lr, "x_lr")
        if x_sr.shape[:2] != x_lr.shape[:2]:
            raise ValueError(f"x_sr {tuple(x_sr.shape)} and x_lr {tuple(x_lr.shape)} need the same batch and channels")
    b, size = x_sr.shape[0], tuple(x_sr.shape[-2:])
    tops, lefts, th, tw = tile_grid(*size, crop, int(period_px))
    boxes = [(top, left, th, tw) for top in tops for left in lefts]
    out_tiles = _tiles(luminance(x_sr.to(work_dtype(x_sr))), boxes)  # (B*T, 1, th, tw)
    if x_lr is None:
        in_tiles = None
    else:
        y_lr = luminance(x_lr.to(work_dtype(x_lr)))  # (B, 1, h, w)
        in_tiles = torch.stack([upscaled_crop(y_lr, size, box) for box in boxes], dim=1).flatten(0, 1)
    stat = dict(sigma=sigma, clip=clip, maps=maps, max_k=max_k, neighbour_offset=neighbour_offset, over_k=over_k,
                min_period=min_period, max_period=max_period)
    score_out, score_in, dominant = (t.view(b, len(boxes)) for t in
                                     _tile_scores(out_tiles, in_tiles, int(period_px), stat))  # (B, T)
    return TileScores(boxes, len(tops), len(lefts), score_out, score_in, dominant, x_lr is not None)


@torch.no_grad()
def quality_report(x_sr: torch.Tensor, x_lr: torch.Tensor, period_px: int = 32,
                   threshold: float = DEFAULT_THRESHOLD, **statistic) -> list[QualityReport]:
    """One QualityReport per image of x_sr (B, 3, H, W) given its input x_lr (B, 3, h, w), both in [0, 1].

    The image's scores are those of its tile with the largest ap_excess (score_tiles, whose keyword
    arguments `statistic` takes: max_k, sigma, crop, ...)."""
    check_image(x_lr, "x_lr")
    tiles = score_tiles(x_sr, x_lr, period_px, **statistic)
    excess, worst = tiles.excess, tiles.worst()  # (B, T), (B, 1)
    picked = [t.gather(1, worst)[:, 0].tolist() for t in (tiles.score_out, tiles.score_in, excess, tiles.dominant)]
    lr_psnr = psnr(bicubic_resize(x_sr, tuple(x_lr.shape[-2:])), x_lr).clamp(max=PSNR_CAP_DB).tolist()
    maps_ = [tuple(tuple(round(v, 4) for v in row) for row in e.view(tiles.rows, tiles.cols).tolist()) for e in excess]
    return [QualityReport(int(period_px), o, i, e, int(d), p, bool(e > threshold), m)
            for o, i, e, d, p, m in zip(*picked, lr_psnr, maps_)]
