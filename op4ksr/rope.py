"""RFR: Flux's rotary position embedding with a rescaled base frequency on the spatial axes.

Flux rotates each attention head in three axis groups (text/index, row, column) with base
theta=10000. Outputs at 4K put up to 128 tokens along an axis; RFR rescales the base of the two
spatial axes so their lowest frequencies still span the grid (docs/ARCHITECTURE.md):
  none: theta            base: theta * scale            ntk: theta * scale ** (d / (d - 2))
"""
from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.models.embeddings import get_1d_rotary_pos_embed

RFR_MODES = ("none", "base", "ntk")
SPATIAL_AXES = (1, 2)  # img_ids = (0, row, col)


def rfr_axis_thetas(theta: float, axes_dim: tuple[int, ...], mode: str, scale: float) -> tuple[float, ...]:
    """The RoPE base of each axis after RFR; non-spatial axes keep `theta`."""
    if mode not in RFR_MODES:
        raise ValueError(f"rfr_mode must be one of {RFR_MODES}, got {mode!r}")
    if not scale > 0:
        raise ValueError(f"rfr_scale must be positive, got {scale}")
    thetas = []
    for axis, dim in enumerate(axes_dim):
        if axis not in SPATIAL_AXES or mode == "none":
            thetas.append(theta)
        elif mode == "base":
            thetas.append(theta * scale)
        else:  # ntk
            if dim <= 2:
                raise ValueError(f"ntk mode needs axis dims > 2, axis {axis} has {dim}")
            thetas.append(theta * scale ** (dim / (dim - 2)))
    return tuple(thetas)


def rope_frequencies(dim: int, theta: float) -> torch.Tensor:
    """(dim/2,) float64 angular frequencies theta ** (-2i/dim) of one axis."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))


class RFRPosEmbed(nn.Module):
    """Drop-in for diffusers' FluxPosEmbed with one RoPE base per axis."""

    def __init__(self, thetas: tuple[float, ...], axes_dim: tuple[int, ...]):
        super().__init__()
        if len(thetas) != len(axes_dim):
            raise ValueError(f"one theta per axis: {len(thetas)} thetas for axes {tuple(axes_dim)}")
        self.thetas = tuple(thetas)
        self.axes_dim = tuple(axes_dim)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # ids (N, n_axes) -> cos, sin (N, sum(axes_dim)); same arithmetic as FluxPosEmbed
        pos = ids.float()
        freqs_dtype = torch.float32 if ids.device.type in ("mps", "npu") else torch.float64
        cos_out, sin_out = [], []
        for axis, (dim, theta) in enumerate(zip(self.axes_dim, self.thetas)):
            cos, sin = get_1d_rotary_pos_embed(
                dim, pos[:, axis], theta=theta, repeat_interleave_real=True, use_real=True, freqs_dtype=freqs_dtype
            )
            cos_out.append(cos)
            sin_out.append(sin)
        return torch.cat(cos_out, dim=-1).to(ids.device), torch.cat(sin_out, dim=-1).to(ids.device)
