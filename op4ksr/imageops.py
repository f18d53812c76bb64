"""Small pure image functions shared by the model and its quality report (torch only)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bicubic_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x (B, C, h, w) resized to size=(H, W) with antialiased bicubic, computed in float32."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    y = F.interpolate(x.float(), size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    return y.to(x.dtype)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """x (B, C, H, W) reflect-padded at the bottom/right to multiples of `multiple`; returns (x, (pad_h, pad_w))."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (0, 0)
    # reflect needs pad < size; replicate covers the tiny-image corner case
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (pad_h, pad_w)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) Rec. 601 luma of RGB x (B, 3, H, W); gray input (B, 1, H, W) is returned as is."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B,) PSNR in dB between a and b (B, C, H, W); inf where they are equal."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)
