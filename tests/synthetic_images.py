"""Synthetic test images with known periodic artifacts: natural-looking bases and injectors.

Bases are scikit-image's bundled photos and textures (offline) and smooth random fields; the
injectors add a pattern of known period P at a given RMS amplitude (in [0, 1] intensity units:
0.002 is invisible, 0.05 obvious), or rebuild an image by upscaling independent tiles so that
seams appear at the tile period. Everything is (1, 3, H, W) float32 in [0, 1], seeded.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from op4ksr.imageops import bicubic_resize

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")
TEXTURES = ("grass", "gravel", "brick")  # brick is a naturally periodic texture
FIELDS = ("field",)
BASES = PHOTOS + TEXTURES + FIELDS
PATTERNS = ("tile", "grid", "sine")


@functools.lru_cache(maxsize=None)
def _bundled(name: str) -> torch.Tensor:
    import skimage.data  # bundled with the package: no download

    return _to_rgb_tensor(getattr(skimage.data, name)())


def _to_rgb_tensor(a: np.ndarray) -> torch.Tensor:
    a = np.asarray(a, dtype=np.float32)
    if a.max() > 1.0:
        a = a / 255.0
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1)[None]  # (1, 3, H, W)


def _random_crop(img: torch.Tensor, size: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    h, w = img.shape[-2:]
    if h < size[0] or w < size[1]:
        s = max(size[0] / h, size[1] / w)
        img = bicubic_resize(img, (int(np.ceil(h * s)), int(np.ceil(w * s)))).clamp(0, 1)
        h, w = img.shape[-2:]
    top, left = rng.integers(0, h - size[0] + 1), rng.integers(0, w - size[1] + 1)
    return img[..., top : top + size[0], left : left + size[1]].contiguous()


def smooth_field(size: tuple[int, int], seed: int = 0, beta: float = 3.0) -> torch.Tensor:
    """(1, 3, H, W) random field with power spectrum ~ 1/f^beta (natural-image-like), in [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size[0])[:, None]
    fx = np.fft.rfftfreq(size[1])[None, :]
    amp = (fy**2 + fx**2 + (1.0 / max(size)) ** 2) ** (-beta / 4)
    chans = []
    for _ in range(3):
        noise = rng.standard_normal((size[0], size[1] // 2 + 1)) + 1j * rng.standard_normal((size[0], size[1] // 2 + 1))
        chans.append(np.fft.irfft2(noise * amp, s=size))
    mix = rng.uniform(0.5, 1.0, (3, 3)) + 2 * np.eye(3)  # correlated channels, like colour photos
    f = np.einsum("ij,jhw->ihw", mix, np.stack(chans))
    f = (f - f.min()) / (f.max() - f.min())
    return torch.from_numpy((0.1 + 0.8 * f).astype(np.float32))[None]


def base_image(name: str, size: tuple[int, int] = (192, 256), seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) clean image: a random crop of a bundled photo/texture, or a smooth random field."""
    if name == "field":
        return smooth_field(size, seed)
    if name not in BASES:
        raise ValueError(f"unknown base image {name!r}; choose from {BASES}")
    return _random_crop(_bundled(name), size, np.random.default_rng(seed))


def periodic_pattern(size: tuple[int, int], period: int, kind: str = "tile", seed: int = 0) -> torch.Tensor:
    """(1, 1, H, W) zero-mean, unit-RMS pattern of exact period `period` px along x and y.

    tile: a random (slightly smoothed) period x period tile repeated, like a repeated texture;
    grid: 1 px lines every period px (patch seams); sine: a 2-D sinusoidal ripple."""
    rng = np.random.default_rng(seed)
    if kind == "tile":
        t = torch.from_numpy(rng.standard_normal((1, 1, period, period)).astype(np.float32))
        t = F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="circular"), 3, stride=1)  # (1, 1, P, P)
    elif kind == "grid":
        t = torch.zeros(1, 1, period, period)
        t[..., 0, :] = 1.0
        t[..., :, 0] = 1.0
    elif kind == "sine":
        ph = rng.uniform(0, 2 * np.pi, 2)
        y, x = np.meshgrid(np.arange(period), np.arange(period), indexing="ij")
        ripple = np.sin(2 * np.pi * x / period + ph[0]) + np.sin(2 * np.pi * y / period + ph[1])
        t = torch.from_numpy(ripple.astype(np.float32))[None, None]
    else:
        raise ValueError(f"unknown pattern kind {kind!r}; choose from {PATTERNS}")
    reps = (-(-size[0] // period), -(-size[1] // period))
    p = t.repeat(1, 1, *reps)[..., : size[0], : size[1]]
    p = p - p.mean()
    return p / p.pow(2).mean().sqrt()


def inject(img: torch.Tensor, pattern: torch.Tensor, amplitude: float) -> torch.Tensor:
    """(1, 3, H, W) img plus amplitude * pattern on every channel, clipped to [0, 1]."""
    return (img + amplitude * pattern).clamp(0, 1)


def with_pattern(name: str, size: tuple[int, int], period: int, amplitude: float, kind: str = "tile",
                 seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) base image `name` with a periodic pattern of `period` px at RMS `amplitude`."""
    return inject(base_image(name, size, seed), periodic_pattern(size, period, kind, seed), amplitude)


def tiled_upscale(x_lr: torch.Tensor, scale: int, tile: int) -> torch.Tensor:
    """(1, C, h*scale, w*scale) x_lr upscaled by bicubic_resize in independent tiles of `tile` output
    px (no context across tiles), so seams appear at the tile period."""
    if tile % scale:
        raise ValueError(f"tile ({tile}) must be a multiple of scale ({scale})")
    t = tile // scale
    h, w = x_lr.shape[-2:]
    rows = []
    for top in range(0, h, t):
        row = [bicubic_resize(x_lr[..., top : top + t, left : left + t],
                              (scale * min(t, h - top), scale * min(t, w - left))) for left in range(0, w, t)]
        rows.append(torch.cat(row, dim=-1))
    return torch.cat(rows, dim=-2).clamp(0, 1)


def degraded_pair(clean: torch.Tensor, scale: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_lr, x_up): clean bicubic-downscaled by `scale` and that input bicubic-upscaled back."""
    h, w = clean.shape[-2:]
    x_lr = bicubic_resize(clean, (h // scale, w // scale)).clamp(0, 1)
    return x_lr, bicubic_resize(x_lr, (h, w)).clamp(0, 1)


HR_TEXTURES = ("field", "grating", "shapes")


def write_hr_textures(folder, first_seed: int = 0, size: int = 112):
    """`folder` holding one generated HR texture per kind of HR_TEXTURES as PNG (seeds first_seed, +1, ...)."""
    from PIL import Image

    from op4ksr.evaluation.benchset import texture

    for i, kind in enumerate(HR_TEXTURES):
        Image.fromarray(texture(kind, first_seed + i, size=size)).save(folder / f"{kind}.png")
    return folder
