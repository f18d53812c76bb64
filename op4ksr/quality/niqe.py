"""NIQE, the Naturalness Image Quality Evaluator (Mittal, Soundararajan, Bovik 2013), as MATLAB computes it.

No reference image and no network weights: the distance between a multivariate Gaussian fitted to
the image's local statistics and the published one of pristine photos (op4ksr/assets/niqe/, from
the NIQE MATLAB release via basicsr). Lower is more natural. Steps, as in the MATLAB release and
basicsr's `calculate_niqe` (docs/QUALITY.md): Y of MATLAB's rgb2ycbcr, rounded to 8-bit levels;
crop to whole 96x96 blocks; at two scales (the second a MATLAB bicubic imresize by 0.5), local
contrast normalisation with a 7x7 Gaussian window (sigma 7/6, replicated borders); per block 18
features from AGGD fits of the normalised values and of their products with 4 neighbours
(circular within the block); the blocks' mean and covariance (blocks with a NaN feature left out
of the covariance) against the pristine model's.
Pure torch on the CPU, worked one row of blocks at a time so that the work stays in the cache
(one 4096x4096 image in under a CPU-second: docs/PERFORMANCE.md).
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PRISTINE_MODEL = Path(__file__).resolve().parent.parent / "assets" / "niqe" / "niqe_pris_params.npz"
BLOCK = 96  # px; the block size the pristine model was fitted with
# The AGGD shape is found on this grid, as in the MATLAB release: 0.2:0.001:10.
_SHAPE_GRID = np.arange(0.2, 10.001, 0.001)
# MATLAB imresize(x, 0.5), bicubic (a = -0.5) with antialiasing: an 8-tap kernel, symmetric borders.
_HALF_TAPS = torch.tensor([-0.0234375, -0.0703125, 0.2265625, 0.8671875,
                           0.8671875, 0.2265625, -0.0703125, -0.0234375], dtype=torch.float64) / 2
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # neighbours: right, below, diagonal, anti-diagonal


@lru_cache(maxsize=1)
def pristine_model() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mu (36,), cov (36, 36), window (7,)) float64: the pristine model's mean and covariance of
    the 36 features, and the 1-D Gaussian whose outer product is the release's 7x7 window."""
    with np.load(PRISTINE_MODEL, allow_pickle=False) as params:
        mu = torch.from_numpy(params["mu_pris_param"].reshape(-1))
        cov = torch.from_numpy(params["cov_pris_param"])
        window = torch.from_numpy(params["gaussian_window"])
    return mu, cov, window.sum(dim=1)  # the window is separable and sums to 1: a row sum is its 1-D factor


@lru_cache(maxsize=1)
def _shape_table() -> tuple[torch.Tensor, torch.Tensor]:
    """(shapes, r) float64: the AGGD shape grid and Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)), increasing in a."""
    a = torch.from_numpy(_SHAPE_GRID)
    return a, torch.exp(2 * torch.lgamma(2 / a) - torch.lgamma(1 / a) - torch.lgamma(3 / a))


def matlab_y(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W) float32 Y in [16, 235] of RGB x (..., 3, H, W) in [0, 1]: MATLAB's rgb2ycbcr of its 8-bit
    levels, rounded to whole levels as basicsr does (at an exact half, float32 rounding decides: one
    level at rare pixels); a gray x (..., 1, H, W) gives its 8-bit levels."""
    levels = x.mul(255).clamp_(0, 255).round_()
    if x.shape[-3] == 1:
        return levels[..., 0, :, :]
    r, g, b = levels.unbind(-3)
    y = r * (65.481 / 255)
    y.add_(g, alpha=128.553 / 255).add_(b, alpha=24.966 / 255)
    return y.add_(16).round_()


def _blur_1d(z: torch.Tensor, taps: list[float], axis: int) -> torch.Tensor:
    """z (rows, cols) correlated with `taps` along axis (0 or 1), valid part only (2r shorter)."""
    n = z.shape[axis] - len(taps) + 1
    out = z.narrow(axis, 0, n) * taps[0]
    for k, t in enumerate(taps[1:], start=1):
        out.add_(z.narrow(axis, k, n), alpha=t)
    return out


def _detail_1d(z: torch.Tensor, taps: list[float], axis: int) -> torch.Tensor:
    """z minus its blur by the symmetric `taps` along axis, valid part only, as the sum over
    j = 1..r of taps[r + j] ((z - z shifted by +j) + (z - z shifted by -j)): exactly 0 where z is
    locally flat, where z - blur(z) would leave rounding noise."""
    r = len(taps) // 2
    n = z.shape[axis] - 2 * r
    centre = z.narrow(axis, r, n)
    out = torch.zeros_like(centre)
    for j in range(1, r + 1):
        pair = z.narrow(axis, r + j, n) + z.narrow(axis, r - j, n)  # flat: exactly 2 * centre
        out.add_(torch.sub(centre, pair, alpha=0.5), alpha=2 * taps[r + j])
    return out


def _normalise(y: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """(h, w) (y - mu) / (sigma + 1) of the rows of y (h + 2r, w) that have r halo rows above and below,
    mu and sigma^2 the local mean and variance under the separable Gaussian window (7x7, sigma 7/6),
    borders replicated (MATLAB imfilter 'replicate').

    y - mu is formed from differences of neighbours, so it is exactly 0 in flat areas (saturated skies,
    borders): computed as y - blur(y), it is rounding noise of either sign there, which the AGGD fits
    then count (implementations differ by up to 0.06 on such images for that reason, docs/QUALITY.md)."""
    r = len(taps) // 2
    p = F.pad(y[None], (r, r), mode="replicate")[0]  # (h + 2r, w + 2r)
    detail = _detail_1d(p[:, r:-r], taps, 0)  # y - blur_y(y), (h, w)
    detail += _blur_1d(_detail_1d(p, taps, 1), taps, 0)  # + blur_y(y - blur_x(y)) = y - blur(y)
    c = p - 128  # Y lies in [16, 235]: centred, E[c^2] - E[c]^2 keeps more float32 digits
    second = _blur_1d(_blur_1d(c * c, taps, 1), taps, 0)  # (h, w)
    mu = c[r:-r, r:-r] - detail
    sigma = second.sub_(mu.mul_(mu)).abs_().sqrt_()
    return detail.div_(sigma.add_(1))


def _half_rows(y: torch.Tensor) -> torch.Tensor:
    """(h/2, w/2): MATLAB imresize(y, 0.5) (bicubic, antialiased) of the middle h rows of y (h + 6, w),
    whose 3 halo rows above and below are its neighbours (or mirrored at the image's edge); rows first."""
    taps = _HALF_TAPS.tolist()
    rows = _blur_1d(y, taps, 0)[::2]  # (h/2, w): the output row o uses input rows 2o - 3 .. 2o + 4
    cols = torch.cat([rows[:, :3].flip(1), rows, rows[:, -3:].flip(1)], dim=1)  # 3 mirrored columns a side
    return _blur_1d(cols, taps, 1)[:, ::2]


def _block_features(z: torch.Tensor) -> torch.Tensor:
    """(w / s, 18) NIQE features of each s x s block of one row of blocks z (s, w) of normalised values:
    the AGGD shape and mean beta of the values, then for each of the 4 neighbour products (circular
    within the block): shape, mean, beta_left, beta_right."""
    s = z.shape[0]
    blocks = z.view(s, -1, s).transpose(0, 1)  # (nb, s, s)
    maps = torch.stack([blocks] + [blocks * torch.roll(blocks, shifts=sh, dims=(1, 2)) for sh in _SHIFTS])
    shape, left, right = aggd_fit(maps.flatten(2))  # (5, nb) each
    mean = (right - left) * torch.exp(torch.lgamma(2 / shape) - torch.lgamma(1 / shape))
    feats = [shape[0], (left[0] + right[0]) / 2]
    for m in range(1, 5):
        feats += [shape[m], mean[m], left[m], right[m]]
    return torch.stack(feats, dim=-1)


def aggd_fit(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(shape, beta_left, beta_right) float64, each (...,), of an asymmetric generalised Gaussian fitted
    by moments to each row of v (..., n), as the release's estimateaggdparam.m: the shape is the grid
    value whose ratio is nearest (the first of a tie); with no value on one side (NaN stds) the shape
    is the grid's first, 0.2, as MATLAB's min over NaNs gives."""
    n = v.shape[-1]
    neg = v.clamp(max=0)
    sign = torch.sign(v)
    balance = sign.sum(-1).double()  # (number > 0) - (number < 0), exact in float32 below 2^24
    nonzero = (torch.linalg.vector_norm(sign, dim=-1).double() ** 2).round()  # (number > 0) + (number < 0)
    sq_left = torch.linalg.vector_norm(neg, dim=-1).double() ** 2
    sq = torch.linalg.vector_norm(v, dim=-1).double() ** 2
    abs_sum = v.sum(-1).double() - 2 * neg.sum(-1).double()  # |v| = v - 2 min(v, 0)
    left_std = (sq_left / ((nonzero - balance) / 2)).sqrt()
    right_std = ((sq - sq_left) / ((nonzero + balance) / 2)).sqrt()
    g = left_std / right_std
    rhat = (abs_sum / n) ** 2 / (sq / n)
    rhatnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    shapes, r = _shape_table()
    hi = torch.searchsorted(r, rhatnorm.contiguous()).clamp(1, len(r) - 1)  # r is increasing: nearest is hi or hi - 1
    lo = hi - 1
    nearest = torch.where((r[lo] - rhatnorm) ** 2 <= (r[hi] - rhatnorm) ** 2, lo, hi)
    shape = shapes[torch.where(rhatnorm.isnan(), 0, nearest)]
    scale = torch.exp(0.5 * (torch.lgamma(1 / shape) - torch.lgamma(3 / shape)))
    return shape, left_std * scale, right_std * scale


def _with_halo(z: torch.Tensor, top: int, count: int, halo: int, symmetric: bool) -> torch.Tensor:
    """Rows top - halo .. top + count + halo of z (n, w); rows beyond z replicated, or mirrored with the
    edge repeated (MATLAB's 'symmetric'). A view where no row is beyond z."""
    n = z.shape[0]
    if top - halo >= 0 and top + count + halo <= n:
        return z[top - halo: top + count + halo]
    idx = torch.arange(top - halo, top + count + halo)
    if symmetric:
        idx = torch.where(idx < 0, -idx - 1, torch.where(idx >= n, 2 * n - idx - 1, idx))
    return z[idx.clamp(0, n - 1)]


def niqe_features(x: torch.Tensor) -> torch.Tensor:
    """(N, 36) float64 features of the N whole 96x96 blocks of one image x (3 or 1, H, W) in [0, 1]:
    18 at full scale, 18 at half scale, blocks in row-major order. Worked in strips of one row of
    blocks (plus a 3-row halo), which stay in the CPU's cache."""
    _, _, taps = pristine_model()
    taps = taps.tolist()
    h, w = (s - s % BLOCK for s in x.shape[-2:])
    x = x[:, :h, :w]
    half = torch.empty(h // 2, w // 2)
    full_feats, half_feats = [], []
    for top in range(0, h, BLOCK):
        first, last = max(0, top - 3), min(h, top + BLOCK + 3)
        y = matlab_y(x[:, first:last])  # (rows, w): Y of the strip and its halo within the image
        full_feats.append(_block_features(_normalise(_with_halo(y, top - first, BLOCK, 3, False), taps)))
        half[top // 2: (top + BLOCK) // 2] = _half_rows(_with_halo(y, top - first, BLOCK, 3, True) / 255) * 255
    hb = BLOCK // 2
    for top in range(0, h // 2, hb):
        half_feats.append(_block_features(_normalise(_with_halo(half, top, hb, 3, False), taps)))
    return torch.cat([torch.cat(full_feats), torch.cat(half_feats)], dim=1)


def _mvg_distance(feats: torch.Tensor, mu_p: torch.Tensor, cov_p: torch.Tensor) -> float:
    """NIQE of one image's block features (N, 36): sqrt((mu_p - mu)^T pinv((cov_p + cov) / 2) (mu_p - mu)),
    mu the NaN-skipping mean per feature, cov over the blocks without a NaN (MATLAB nanmean / nancov)."""
    mu = feats.nanmean(dim=0)
    whole = feats[~feats.isnan().any(dim=1)]
    if whole.shape[0] < 2:
        return math.nan
    cov = torch.cov(whole.T)
    d = (mu_p - mu)[None]  # (1, 36)
    return float((d @ torch.linalg.pinv((cov_p + cov) / 2) @ d.T).clamp_min(0).sqrt())


@torch.no_grad()
def niqe_batch(x: torch.Tensor) -> list[float]:
    """NIQE of each image of x (B, 3 or 1, H, W), RGB or gray in [0, 1]; lower is more natural.

    NaN for an image smaller than 96 x 192 px (fewer than two whole blocks) or with fewer than two
    blocks that are not flat. Computed on the CPU, in float32 (float64 for the statistics)."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must be (B, 1 or 3, H, W); got shape {tuple(x.shape)}")
    h, w = (s - s % BLOCK for s in x.shape[-2:])
    if min(h, w) < BLOCK or h * w < 2 * BLOCK * BLOCK:
        return [math.nan] * x.shape[0]
    mu_p, cov_p, _ = pristine_model()
    return [_mvg_distance(niqe_features(image.cpu().float()), mu_p, cov_p) for image in x]


def niqe(image: torch.Tensor) -> float:
    """NIQE of one image (3 or 1, H, W) or (1, 3 or 1, H, W), RGB or gray in [0, 1]; lower is more
    natural; NaN when smaller than 96 x 192 px."""
    return niqe_batch(image if image.dim() == 4 else image[None])[0]
