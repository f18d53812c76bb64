"""One autocorrelation statistic for token-period artifacts, and the L_AP loss built on it.

Pure torch; the definition, its parameters and how they were chosen: docs/PERIODICITY.md.
detail d = soft-clipped high-pass luminance; rho = normalised circular autocorrelation (FFT) of d
("signed" map) and of d**2 ("energy" map, for seams whose sign varies); at lag L the prominence is
rho(L) - (rho(L - o) + rho(L + o)) / 2 with o = P/2; the score at period P is the max over maps and
x/y of the mean over L = k*P, k = 1..K. `periodicity` and L_AP score a centre crop with sides
multiples of P (a crop, never a resize, which would alias the period; whole periods keep the wrap
seamless); the quality report scores tiles of that size covering the whole image and reports the
worst one, so a pattern confined to one corner of a large output is seen (periodicity_report.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from op4ksr.imageops import luminance

DEFAULT_SIGMA = 1.0  # px; high-pass Gaussian std (docs/PERIODICITY.md)
DEFAULT_CLIP = 0.01  # soft clip of the detail map, in [0, 1] intensity units (docs/PERIODICITY.md)
MAPS = ("signed", "energy")
OVER_K = "mean"  # how lags k*P, k = 1..K, combine; mean: a texture at 2P or 3P does not count (docs/PERIODICITY.md)
DEFAULT_CROP = 1024  # px; longest scored side of a crop (periodicity, L_AP) and of a report's tiles


def work_dtype(x: torch.Tensor) -> torch.dtype:
    # float32 inside; float64 is kept so that gradcheck can run
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_image(img: torch.Tensor, name: str = "img") -> None:
    if img.dim() != 4 or img.shape[1] not in (1, 3) or min(img.shape[-2:]) < 2:
        raise ValueError(f"{name} must be (B, 1 or 3, H, W) with H, W >= 2; got shape {tuple(img.shape)}")


def _smooth_size(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def high_pass(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) y minus its Gaussian blur (std `sigma` px, reflect borders); sigma 0 returns y."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return y
    h, w = y.shape[-2:]
    r = math.ceil(3 * sigma)
    ph, pw = _smooth_size(h + 2 * r), _smooth_size(w + 2 * r)
    pads = (r, pw - w - r, r, ph - h - r)
    mode = "reflect" if max(pads) < min(h, w) else "replicate"
    p = F.pad(y, pads, mode=mode)  # (B, C, ph, pw); the blur is circular on the padded canvas
    fy = torch.fft.fftfreq(ph, dtype=y.dtype, device=y.device)
    fx = torch.fft.rfftfreq(pw, dtype=y.dtype, device=y.device)
    gain = torch.exp(-2 * math.pi**2 * sigma**2 * (fy[:, None] ** 2 + fx[None, :] ** 2))  # (ph, pw//2+1)
    blurred = torch.fft.irfft2(torch.fft.rfft2(p) * gain, s=(ph, pw))
    return (p - blurred)[..., r : r + h, r : r + w]


def crop_box(h: int, w: int, max_side: int, multiple: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centre crop: each side min(side, max_side) rounded down to a
    multiple of `multiple` (a side shorter than `multiple` is kept whole)."""
    if max_side < 2 or multiple < 1:
        raise ValueError(f"crop needs max_side >= 2 and multiple >= 1; got {max_side}, {multiple}")

    def side(n: int) -> int:
        m = min(n, max_side)
        return m - m % multiple if m >= multiple else m

    ch, cw = side(h), side(w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def crop_to_box(x: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    top, left, h, w = box
    return x[..., top : top + h, left : left + w]


def detail_map(img: torch.Tensor, sigma: float = DEFAULT_SIGMA, clip: float | None = DEFAULT_CLIP) -> torch.Tensor:
    """(B, 1, H, W) high-passed luminance of img (B, 1 or 3, H, W), soft-clipped to clip * tanh(y / clip).

    The soft clip (None: off) keeps strong natural edges from drowning a faint pattern in flat
    regions, where people see it; float32 inside, float64 kept (gradcheck)."""
    check_image(img)
    y = high_pass(luminance(img.to(work_dtype(img))), sigma)
    if clip is not None:
        if clip <= 0:
            raise ValueError(f"clip must be > 0 or None, got {clip}")
        y = clip * torch.tanh(y / clip)
    return y


def normalised_autocorr(y: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """(B, M, H, W) circular autocorrelation of each zero-meaned map y (B, M, H, W), divided by its
    lag-0 value (plus `eps` * H * W: a per-pixel variance floor; 0 for reports). A constant map gives 0."""
    y = y - y.mean(dim=(-2, -1), keepdim=True)
    h, w = y.shape[-2:]
    spec = torch.fft.rfft2(y)  # (B, M, H, W//2+1)
    acf = torch.fft.irfft2(spec.real**2 + spec.imag**2, s=(h, w))  # Wiener-Khinchin
    energy = acf[..., :1, :1].clamp_min(torch.finfo(acf.dtype).tiny) + eps * h * w  # (B, M, 1, 1)
    return acf / energy


def autocorr(img: torch.Tensor, sigma: float = DEFAULT_SIGMA, clip: float | None = DEFAULT_CLIP,
             maps: tuple[str, ...] = MAPS, eps: float = 0.0) -> torch.Tensor:
    """(B, M, H, W) normalised circular autocorrelation rho of img (B, 1 or 3, H, W), rho[..., 0, 0] = 1.

    One map per entry of `maps`: "signed" is the detail map d, "energy" is d**2 (it sees seams
    whose sign changes from tile to tile). Lag (dy, dx) sits at rho[..., dy % H, dx % W]."""
    unknown = set(maps) - set(MAPS)
    if not maps or unknown:
        raise ValueError(f"maps must be a non-empty subset of {MAPS}; got {maps}")
    return normalised_autocorr(detail_maps(img, sigma, clip, maps), eps)


def detail_maps(img: torch.Tensor, sigma: float, clip: float | None, maps: tuple[str, ...]) -> torch.Tensor:
    """(B, M, H, W): one map per entry of `maps` (see autocorr) of img (B, 1 or 3, H, W)."""
    d = detail_map(img, sigma, clip)  # (B, 1, H, W)
    return torch.cat([d if m == "signed" else d * d for m in maps], dim=1)


def axis_autocorr(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(along_x (B, M, W), along_y (B, M, H)): the lag-(0, dx) and lag-(dy, 0) lines of
    normalised_autocorr(y) for maps y (B, M, H, W), from 1-D transforms (half the work of the 2-D
    one; the same values up to float rounding): a row's circular autocorrelation summed over rows."""
    y = y - y.mean(dim=(-2, -1), keepdim=True)
    h, w = y.shape[-2:]
    energy = y.pow(2).sum(dim=(-2, -1))[..., None].clamp_min(torch.finfo(y.dtype).tiny)  # (B, M, 1)
    fx = torch.fft.rfft(y, dim=-1)  # (B, M, H, W//2+1)
    fy = torch.fft.rfft(y.transpose(-1, -2).contiguous(), dim=-1)  # (B, M, W, H//2+1); contiguous rows: faster
    along_x = torch.fft.irfft((fx.real**2 + fx.imag**2).sum(-2), n=w)  # (B, M, W)
    along_y = torch.fft.irfft((fy.real**2 + fy.imag**2).sum(-2), n=h)  # (B, M, H)
    return along_x / energy, along_y / energy


def _axis_profiles(rho) -> tuple[torch.Tensor, torch.Tensor]:
    """(along_x (B, M, W), along_y (B, M, H)) of rho (B, M, H, W) or (B, H, W); axis_autocorr's
    output passes through."""
    if isinstance(rho, tuple):
        return rho
    b = rho.shape[0]
    along_x = rho[..., 0, :].reshape(b, -1, rho.shape[-1])  # (B, M, W)
    along_y = rho[..., :, 0].reshape(b, -1, rho.shape[-2])  # (B, M, H)
    return along_x, along_y


def _prominence(profile: torch.Tensor, lags: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(B, M, n) profile[lag] minus the mean of profile[lag - offset] and profile[lag + offset], for
    the lags whose right neighbour does not pass half the axis (beyond it circular lags mirror)."""
    valid = lags + offsets <= profile.shape[-1] // 2
    lags, offsets = lags[valid], offsets[valid]
    return profile[..., lags] - 0.5 * (profile[..., lags - offsets] + profile[..., lags + offsets])


def _smooth_max(s: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """(B,) max over dim 1, or t * (logsumexp(s / t) - log n), which lies in [max - t log n, max]."""
    if not temperature:
        return s.amax(dim=1)
    return temperature * (torch.logsumexp(s / temperature, dim=1) - math.log(s.shape[1]))


def _check_period(period: int, max_k: int, neighbour_offset: float) -> None:
    if int(period) != period or period < 2:
        raise ValueError(f"period must be an integer >= 2 px, got {period}")
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    if not 0 < neighbour_offset < 1 or round(neighbour_offset * period) < 1:
        raise ValueError(f"neighbour_offset must be in (0, 1) and >= 1 px at period {period}; got {neighbour_offset}")


def periodicity_from_autocorr(rho, period: int, max_k: int = 4, neighbour_offset: float = 0.5,
                              temperature: float | None = None, over_k: str = OVER_K) -> torch.Tensor:
    """(B,) periodicity score of rho (B, M, H, W) or (B, H, W), or axis_autocorr's lines, at `period`: the max over maps and x/y
    of the `over_k` ("max" or "mean") over k = 1..max_k of the prominence
    rho(k*P) - (rho(k*P - o) + rho(k*P + o)) / 2, o = round(neighbour_offset * P).

    Lags whose neighbours would pass half an axis are skipped; with none left (an image shorter
    than 3 * period px) the score is 0: no evidence. `temperature` None/0: plain max; > 0: smooth max."""
    _check_period(period, max_k, neighbour_offset)
    if over_k not in ("max", "mean"):
        raise ValueError(f"over_k must be 'max' or 'mean', got {over_k!r}")
    profiles = _axis_profiles(rho)
    lags = torch.arange(1, max_k + 1, device=profiles[0].device) * int(period)
    offsets = torch.full_like(lags, round(neighbour_offset * period))
    per_axis = []
    for profile in profiles:
        s = _prominence(profile, lags, offsets)  # (B, M, n valid k)
        if s.shape[-1]:
            per_axis.append(s.flatten(1) if over_k == "max" else s.mean(-1))
    if not per_axis:
        return profiles[0].flatten(1)[:, 0] * 0
    return _smooth_max(torch.cat(per_axis, dim=1), temperature)


def periodicity(img: torch.Tensor, period: int = 32, max_k: int = 4, *, neighbour_offset: float = 0.5,
                sigma: float = DEFAULT_SIGMA, clip: float | None = DEFAULT_CLIP, maps: tuple[str, ...] = MAPS,
                crop: int = DEFAULT_CROP, over_k: str = OVER_K, temperature: float | None = None) -> torch.Tensor:
    """(B,) periodicity score of img (B, 1 or 3, H, W) at `period` px, on its centre crop of at most
    `crop` px a side (sides multiples of `period`)."""
    rho = periodicity_autocorr(img, period, sigma=sigma, clip=clip, maps=maps, crop=crop)
    return periodicity_from_autocorr(rho, period, max_k, neighbour_offset, temperature, over_k)


def periodicity_autocorr(img: torch.Tensor, period: int = 32, *, sigma: float = DEFAULT_SIGMA,
                         clip: float | None = DEFAULT_CLIP, maps: tuple[str, ...] = MAPS,
                         crop: int = DEFAULT_CROP) -> torch.Tensor:
    """(B, M, h, w) autocorr of img's centre crop that `periodicity` scores: sides at most `crop` px,
    multiples of `period` (a crop, not a resize, which would alias the period)."""
    check_image(img)
    return autocorr(crop_to_box(img, crop_box(*img.shape[-2:], crop, int(period))), sigma, clip, maps)


def dominant_period_from_autocorr(rho, min_period: int = 8, max_period: int = 128,
                                  neighbour_offset: float = 0.5, harmonic_ratio: float = 0.5) -> torch.Tensor:
    """(B,) int64 period L in [min_period, max_period] with the largest prominence
    rho(L) - (rho(L - o) + rho(L + o)) / 2, o = round(neighbour_offset * L), over maps and x/y; 0 when
    no lag fits. Odd multiples of a period are peaks too, so the result is the smallest L / m
    (m = 2..5) that keeps `harmonic_ratio` of the best prominence."""
    if not 2 <= min_period <= max_period:
        raise ValueError(f"need 2 <= min_period <= max_period; got {min_period}, {max_period}")
    profiles = _axis_profiles(rho)
    lags = torch.arange(min_period, max_period + 1, device=profiles[0].device)
    offsets = (lags * neighbour_offset).round().long().clamp_min(1)
    ref = profiles[0]
    prom = torch.full((ref.shape[0], len(lags)), -math.inf, dtype=ref.dtype, device=ref.device)  # (B, n)
    for profile in profiles:  # (B, M, N)
        valid = lags + offsets <= profile.shape[-1] // 2
        if valid.any():
            s = _prominence(profile, lags, offsets).amax(1)  # (B, n valid)
            prom[:, valid] = torch.maximum(prom[:, valid], s)
    best = prom.argmax(dim=1)  # (B,) index into lags
    best_prom = prom.gather(1, best[:, None])[:, 0]
    period = lags[best]
    for m in range(2, 6):  # ascending: the last accepted divisor is the smallest
        d = lags[best] // m
        ok = (lags[best] % m == 0) & (d >= min_period)
        cand = prom.gather(1, (d - min_period).clamp_min(0)[:, None])[:, 0]
        period = torch.where(ok & (cand >= harmonic_ratio * best_prom), d, period)
    return torch.where(torch.isfinite(best_prom), period, torch.zeros_like(period))


def dominant_period(img: torch.Tensor, min_period: int = 8, max_period: int = 128, *,
                    neighbour_offset: float = 0.5, sigma: float = DEFAULT_SIGMA,
                    clip: float | None = DEFAULT_CLIP, maps: tuple[str, ...] = MAPS,
                    crop: int = DEFAULT_CROP, crop_multiple: int = 64) -> torch.Tensor:
    """(B,) int64 dominant period in px of img (B, 1 or 3, H, W) by peak search along x and y, on a
    centre crop of at most `crop` px with sides multiples of `crop_multiple` (seamless wrap for
    periods dividing it)."""
    check_image(img)
    rho = autocorr(crop_to_box(img, crop_box(*img.shape[-2:], crop, crop_multiple)), sigma, clip, maps)
    return dominant_period_from_autocorr(rho, min_period, max_period, neighbour_offset)


def ap_loss(x_sr: torch.Tensor, x_hr: torch.Tensor, period: int = 32, *, max_k: int = 4,
            neighbour_offset: float = 0.5, sigma: float = DEFAULT_SIGMA, clip: float | None = DEFAULT_CLIP,
            maps: tuple[str, ...] = MAPS, crop: int = DEFAULT_CROP, over_k: str = OVER_K,
            temperature: float = 0.05, eps: float = 1e-6) -> torch.Tensor:
    """Scalar L_AP: batch mean of max(0, smooth-max periodicity) of the error map x_sr - x_hr.

    Differentiable in x_sr. Natural periodic textures cancel in the error; the normalised score
    penalises the periodic share of the error while the caller's L1/L2 term shrinks its size.
    The training loss adds `loss.lambda_ap * ap_loss(...)` (see `ap_loss_weighted`)."""
    if x_sr.shape != x_hr.shape:
        raise ValueError(f"x_sr and x_hr must have the same shape; got {tuple(x_sr.shape)} and {tuple(x_hr.shape)}")
    err = x_sr - x_hr  # (B, C, H, W)
    check_image(err, "x_sr - x_hr")
    rho = autocorr(crop_to_box(err, crop_box(*err.shape[-2:], crop, int(period))), sigma, clip, maps, eps)
    score = periodicity_from_autocorr(rho, period, max_k, neighbour_offset, temperature, over_k)  # (B,)
    return score.clamp_min(0).mean()


def ap_loss_weighted(x_sr: torch.Tensor, x_hr: torch.Tensor, period: int, lambda_ap: float,
                     **kwargs) -> torch.Tensor:
    """Scalar lambda_ap * ap_loss(x_sr, x_hr, period, **kwargs): the L_AP term of the training loss."""
    return lambda_ap * ap_loss(x_sr, x_hr, period, **kwargs)
