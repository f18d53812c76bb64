"""Synthetic degradations HR -> LR: Real-ESRGAN's second-order model plus archive-style options.

`degrade(hr, cfg, generator)` draws every random choice from the given torch.Generator, so the
same generator state gives the same LR image bit for bit. The order follows Real-ESRGAN
(Wang et al. 2021, realesrgan_model.py): blur -> random resize -> noise -> JPEG, twice, then
resize to the target size with a final sinc filter and a JPEG in random order. Archive options
(film grain, repeated JPEG re-compression) come after. Option names mirror the Real-ESRGAN
training YAML so published values can be dropped into the `degrade:` config section as they are.
"""
from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from op4ksr.errors import UserError

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
_ALL_KERNELS = list(KERNEL_TYPES)
_KERNEL_PROB = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]


@dataclass(frozen=True)
class DegradeConfig:
    """Every parameter of the degradation; defaults are Real-ESRGAN x4plus's training values."""

    scale: int = 4
    clean_prob: float = 0.0  # probability of a plain antialiased bicubic downscale, nothing else
    # first order
    blur_kernel_size: int = 21  # the largest kernel; sizes are drawn from the odd numbers 7..this
    kernel_list: tuple[str, ...] = tuple(_ALL_KERNELS)
    kernel_prob: tuple[float, ...] = tuple(_KERNEL_PROB)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)  # sigma in 8-bit levels
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # second order
    second_blur_prob: float = 0.8
    blur_kernel_size2: int = 21
    kernel_list2: tuple[str, ...] = tuple(_ALL_KERNELS)
    kernel_prob2: tuple[float, ...] = tuple(_KERNEL_PROB)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    final_sinc_prob: float = 0.8
    # archive-style options (film scans re-saved many times); off by default
    film_grain_prob: float = 0.0
    film_grain_range: tuple[float, float] = (0.01, 0.05)  # grain std at mid-grey, in [0, 1] units
    film_grain_size_range: tuple[float, float] = (0.5, 1.5)  # grain blur sigma in LR pixels
    film_grain_mono_prob: float = 0.7
    jpeg_recompress_prob: float = 0.0
    jpeg_recompress_count: tuple[int, int] = (2, 4)  # inclusive range of extra JPEG round trips
    jpeg_recompress_range: tuple[float, float] = (50.0, 95.0)

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise UserError(f"degrade.scale={self.scale} must be >= 1")
        for suffix in ("", "2"):
            size = getattr(self, f"blur_kernel_size{suffix}")
            kinds, probs = getattr(self, f"kernel_list{suffix}"), getattr(self, f"kernel_prob{suffix}")
            if size < 7 or size % 2 == 0:
                raise UserError(f"degrade.blur_kernel_size{suffix}={size} must be odd and >= 7")
            unknown = set(kinds) - set(KERNEL_TYPES)
            if unknown or len(kinds) != len(probs) or not kinds:
                raise UserError(f"degrade.kernel_list{suffix}={list(kinds)} needs names from {KERNEL_TYPES} "
                                 f"and one kernel_prob{suffix} entry each")
            if len(getattr(self, f"resize_prob{suffix}")) != 3:
                raise UserError(f"degrade.resize_prob{suffix} must be [up, down, keep]")
        for name, value in dataclasses.asdict(self).items():
            if isinstance(value, float) and "prob" in name and not 0 <= value <= 1:
                raise UserError(f"degrade.{name}={value} must be a probability in [0, 1]")

    @classmethod
    def from_dict(cls, values: dict) -> "DegradeConfig":
        """A config from a mapping (the `degrade:` config section); unknown keys are refused."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise UserError(f"unknown degradation option(s): {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()})

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# --- random draws, all from one generator -------------------------------------------------------


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64))


def _chance(g: torch.Generator, p: float) -> bool:
    return bool(torch.rand((), generator=g, dtype=torch.float64) < p)


def _pick(g: torch.Generator, options, probs=None):
    weights = torch.tensor(probs if probs is not None else [1.0] * len(options), dtype=torch.float64)
    return options[int(torch.multinomial(weights, 1, generator=g))]


def _beta(g: torch.Generator, lo: float, hi: float) -> float:
    # Real-ESRGAN: half of the draws below 1 (heavier tails), half above (flatter top)
    return _uniform(g, lo, 1.0) if _chance(g, 0.5) and lo < 1 else _uniform(g, max(1.0, lo), hi)


# --- kernels -----------------------------------------------------------------------------------


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(size, dtype=torch.float64) - size // 2
    return torch.meshgrid(r, r, indexing="ij")  # (y, x), each (size, size)


def anisotropic_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, kind: str = "gaussian",
                       beta: float = 1.0) -> torch.Tensor:
    """(size, size) normalised blur kernel: Gaussian, generalized Gaussian or plateau, rotated by theta."""
    y, x = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y  # coordinates along the kernel's principal axes
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2  # x^T Sigma^-1 x
    if kind == "gaussian":
        k = torch.exp(-0.5 * q)
    elif kind == "generalized":
        k = torch.exp(-0.5 * q**beta)
    elif kind == "plateau":
        k = 1 / (q**beta + 1)
    else:
        raise ValueError(f"unknown kernel kind {kind!r}")
    return (k / k.sum()).float()


def sinc_kernel(size: int, omega_c: float) -> torch.Tensor:
    """(size, size) circular low-pass (2-D sinc, cutoff omega_c in rad/px), normalised."""
    y, x = _grid(size)
    r = torch.sqrt(x**2 + y**2)
    k = omega_c * torch.special.bessel_j1(omega_c * r) / (2 * math.pi * r)
    k[size // 2, size // 2] = omega_c**2 / (4 * math.pi)  # the limit at r = 0
    return (k / k.sum()).float()


def random_blur_kernel(g: torch.Generator, cfg: DegradeConfig, order: int) -> torch.Tensor:
    """One (k, k) kernel of the first (order=1) or second (order=2) stage, k odd in 7..max size.

    Real-ESRGAN zero-pads every kernel to the max size to batch them; one image at a time
    needs no padding, and convolving with the true support is up to 9x cheaper."""
    sfx = "" if order == 1 else "2"
    max_size = getattr(cfg, f"blur_kernel_size{sfx}")
    size = 2 * int(torch.randint(3, max_size // 2 + 1, (), generator=g)) + 1
    if _chance(g, getattr(cfg, f"sinc_prob{sfx}")):
        omega = _uniform(g, math.pi / 3, math.pi) if size < 13 else _uniform(g, math.pi / 5, math.pi)
        kernel = sinc_kernel(size, omega)
    else:
        kind = _pick(g, getattr(cfg, f"kernel_list{sfx}"), getattr(cfg, f"kernel_prob{sfx}"))
        lo, hi = getattr(cfg, f"blur_sigma{sfx}")
        sx = _uniform(g, lo, hi)
        iso = kind.endswith("iso") and not kind.endswith("aniso")
        sy, theta = (sx, 0.0) if iso else (_uniform(g, lo, hi), _uniform(g, -math.pi, math.pi))
        family = kind.split("_")[0] if "_" in kind else "gaussian"
        beta = 1.0
        if family == "generalized":
            beta = _beta(g, *getattr(cfg, f"betag_range{sfx}"))
        elif family == "plateau":
            beta = _beta(g, *getattr(cfg, f"betap_range{sfx}"))
        kernel = anisotropic_kernel(size, sx, sy, theta, family, beta)
    return kernel


# --- operations on (1, 3, H, W) float images in [0, 1] -------------------------------------------


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) convolved per channel with kernel (k, k), reflect borders."""
    k = kernel.shape[-1]
    mode = "reflect" if k // 2 < min(x.shape[-2:]) else "replicate"
    xp = F.pad(x, (k // 2,) * 4, mode=mode)  # (B, C, H + k - 1, W + k - 1)
    if k <= 9:
        weight = kernel.to(x)[None, None].expand(x.shape[1], 1, k, k)
        return F.conv2d(xp, weight, groups=x.shape[1])
    # large kernels: the same correlation through the FFT, ~10x faster on CPU
    ph, pw = xp.shape[-2:]
    spec = torch.fft.rfft2(xp.double()) * torch.fft.rfft2(kernel.double().flip(-2, -1), s=(ph, pw))
    full = torch.fft.irfft2(spec, s=(ph, pw))  # circular; rows/cols from k-1 on are the valid part
    return full[..., k - 1 :, k - 1 :].to(x.dtype)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    size = (max(1, size[0]), max(1, size[1]))
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def _random_resize(g: torch.Generator, x: torch.Tensor, probs, scale_range, base: tuple[float, float]) -> torch.Tensor:
    direction = _pick(g, ("up", "down", "keep"), probs)
    s = {"up": lambda: _uniform(g, 1, scale_range[1]), "down": lambda: _uniform(g, scale_range[0], 1),
         "keep": lambda: 1.0}[direction]()
    mode = _pick(g, RESIZE_MODES)
    return _resize(x, (int(base[0] * s), int(base[1] * s)), mode)


def _add_noise(g: torch.Generator, x: torch.Tensor, gaussian_prob: float, sigma_range, poisson_range,
               gray_prob: float) -> torch.Tensor:
    gray = _chance(g, gray_prob)
    if _chance(g, gaussian_prob):
        sigma = _uniform(g, *sigma_range) / 255
        shape = (x.shape[0], 1, *x.shape[-2:]) if gray else x.shape
        noise = torch.randn(shape, generator=g) * sigma
    else:
        scale = _uniform(g, *poisson_range)
        src = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if gray else x
        src = (src.clamp(0, 1) * 255).round() / 255
        levels = 2 ** math.ceil(math.log2(max(2, len(torch.unique(src)))))  # as BasicSR
        noise = (torch.poisson(src * levels, generator=g) / levels - src) * scale
    return (x + noise).clamp(0, 1)


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1] encoded and decoded as 8-bit JPEG at `quality` (Pillow, CPU)."""
    from PIL import Image

    out = []
    for img in x.clamp(0, 1):
        arr = (img.permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
        out.append(torch.from_numpy(dec).permute(2, 0, 1))
    return torch.stack(out).to(x)


def _random_jpeg(g: torch.Generator, x: torch.Tensor, quality_range) -> torch.Tensor:
    return jpeg_roundtrip(x, round(_uniform(g, *quality_range)))


def film_grain(g: torch.Generator, x: torch.Tensor, cfg: DegradeConfig) -> torch.Tensor:
    """x with film-like grain: blurred Gaussian noise, strongest in the mid-tones, mono or per channel."""
    strength = _uniform(g, *cfg.film_grain_range)
    size = _uniform(g, *cfg.film_grain_size_range)
    mono = _chance(g, cfg.film_grain_mono_prob)
    noise = torch.randn((x.shape[0], 1 if mono else 3, *x.shape[-2:]), generator=g)
    ksize = 2 * math.ceil(3 * size) + 1
    noise = filter2d(noise, anisotropic_kernel(ksize, size, size, 0.0))
    noise = noise / noise.flatten(1).std(dim=1).clamp_min(1e-8)[:, None, None, None]
    midtones = 4 * x * (1 - x)  # grain is least visible in deep shadows and highlights
    return (x + strength * midtones * noise).clamp(0, 1)


# --- the pipeline --------------------------------------------------------------------------------


def _second_order(g: torch.Generator, hr: torch.Tensor, cfg: DegradeConfig) -> torch.Tensor:
    h, w = hr.shape[-2:]
    x = filter2d(hr, random_blur_kernel(g, cfg, 1))
    x = _random_resize(g, x, cfg.resize_prob, cfg.resize_range, (h, w))
    x = _add_noise(g, x, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range, cfg.gray_noise_prob)
    x = _random_jpeg(g, x, cfg.jpeg_range)
    if _chance(g, cfg.second_blur_prob):
        x = filter2d(x, random_blur_kernel(g, cfg, 2))
    x = _random_resize(g, x, cfg.resize_prob2, cfg.resize_range2, (h / cfg.scale, w / cfg.scale))
    x = _add_noise(g, x, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2, cfg.gray_noise_prob2)
    final_sinc = None
    if _chance(g, cfg.final_sinc_prob):
        size = 2 * int(torch.randint(3, 11, (), generator=g)) + 1
        final_sinc = sinc_kernel(size, _uniform(g, math.pi / 3, math.pi))
    mode = _pick(g, RESIZE_MODES)
    jpeg_first = _chance(g, 0.5)
    if jpeg_first:
        x = _random_jpeg(g, x, cfg.jpeg_range2)
    x = _resize(x, (h // cfg.scale, w // cfg.scale), mode)
    if final_sinc is not None:
        x = filter2d(x, final_sinc)
    if not jpeg_first:
        x = _random_jpeg(g, x, cfg.jpeg_range2)
    return x.clamp(0, 1)


def _archive(g: torch.Generator, x: torch.Tensor, cfg: DegradeConfig) -> torch.Tensor:
    if _chance(g, cfg.film_grain_prob):
        x = film_grain(g, x, cfg)
    if _chance(g, cfg.jpeg_recompress_prob):
        lo, hi = cfg.jpeg_recompress_count
        for _ in range(int(torch.randint(lo, hi + 1, (), generator=g))):
            x = _random_jpeg(g, x, cfg.jpeg_recompress_range)
    return x


def degrade(hr: torch.Tensor, cfg: DegradeConfig, generator: torch.Generator) -> torch.Tensor:
    """LR images (B, 3, H/scale, W/scale) in [0, 1], 8-bit quantised, from hr (B, 3, H, W) in [0, 1].

    Each image gets its own draws, in batch order, from `generator` (a CPU generator); H and W
    should be multiples of cfg.scale (the LR size is rounded down otherwise)."""
    if hr.ndim != 4 or hr.shape[1] != 3:
        raise ValueError(f"hr must be (B, 3, H, W), got {tuple(hr.shape)}")
    if min(hr.shape[-2:]) < cfg.scale:
        raise ValueError(f"hr {tuple(hr.shape[-2:])} is smaller than the scale {cfg.scale}")
    device, out = hr.device, []
    for img in hr.detach().float().cpu().split(1):
        if _chance(generator, cfg.clean_prob):
            h, w = img.shape[-2:]
            x = F.interpolate(img, size=(h // cfg.scale, w // cfg.scale), mode="bicubic",
                              align_corners=False, antialias=True).clamp(0, 1)
        else:
            x = _archive(generator, _second_order(generator, img, cfg), cfg)
        out.append((x * 255).round() / 255)
    return torch.cat(out).to(device)
