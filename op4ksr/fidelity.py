"""Output fidelity: keep the model's output the same picture as its input (docs/ARCHITECTURE.md).

Applied after the VAE decode, on the device, differentiable (training can include it):
- `wavelet`: the output's high frequencies over the low frequencies of the bicubic upscale of
  the input (StableSR's wavelet colour fix): colour, tone and composition come from the input;
- `adain`: each channel's mean and std set to those of the bicubic upscale (colour cast only);
- `backproject`: iterative back-projection, x <- x + up(x_lr - down(x)): the output, downscaled
  as the quality report does, converges to the input (LR consistency).
`strength` blends the corrected output with the uncorrected one (1: fully corrected).
Strict consistency also carries the input's noise and JPEG blocks into the output: docs/QUALITY.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from op4ksr.errors import UserError
from op4ksr.imageops import bicubic_resize

MODES = ("none", "wavelet", "adain", "backproject")
# the 3x3 binomial kernel of the a-trous wavelet (StableSR's wavelet_blur); dilated 2**i at level i
_BINOMIAL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


@dataclass(frozen=True)
class Fidelity:
    """The fidelity step's settings: mode and its parameters (those of other modes are ignored)."""

    mode: str = "none"
    levels: int = 4  # wavelet: levels of detail kept from the output (low band below them from the input)
    strength: float = 1.0  # all modes: 0 = the output as decoded, 1 = fully corrected
    iterations: int = 10  # backproject: steps

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"fidelity mode {self.mode!r} is unknown; choose one of {', '.join(MODES)}")
        if int(self.levels) != self.levels or self.levels < 1:
            raise UserError(f"fidelity levels must be an integer >= 1, got {self.levels}")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise UserError(f"fidelity iterations must be an integer >= 1, got {self.iterations}")
        if not 0 <= self.strength <= 1:
            raise UserError(f"fidelity strength must be in [0, 1], got {self.strength}")

    def options(self) -> dict:
        """These settings as inference options (a checkpoint's model_index.json "inference", sr.fidelity*)."""
        return {OPTION_NAMES[name]: getattr(self, name) for name in OPTION_NAMES}

    @classmethod
    def from_options(cls, options: dict) -> "Fidelity":
        """The Fidelity of saved or resolved inference options; absent keys take the defaults above
        (which op4ksr.loading.SAVED_OPTIONS repeats, without torch: tests/op4ksr/test_fidelity.py ties them)."""
        d = cls()
        return cls(options.get("fidelity", d.mode), int(options.get("fidelity_levels", d.levels)),
                   float(options.get("fidelity_strength", d.strength)),
                   int(options.get("fidelity_iterations", d.iterations)))


# the inference option of each setting
OPTION_NAMES = {"mode": "fidelity", "levels": "fidelity_levels", "strength": "fidelity_strength",
                "iterations": "fidelity_iterations"}


def wavelet_blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """(B, C, H, W) x smoothed by the 3x3 binomial kernel dilated `dilation` px (replicate borders)."""
    c = x.shape[1]
    kernel = _BINOMIAL.to(x.device, x.dtype).expand(c, 1, 3, 3)  # (C, 1, 3, 3) depthwise
    xp = F.pad(x, (dilation,) * 4, mode="replicate")
    return F.conv2d(xp, kernel, dilation=dilation, groups=c)


def wavelet_split(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low), both (B, C, H, W), high + low = x: `levels` a-trous levels of detail, and the
    residual low band (a blur of about 2**levels px)."""
    low = x
    for i in range(levels):
        low = wavelet_blur(low, 2**i)
    return x - low, low


def wavelet_transfer(x_sr: torch.Tensor, x_up: torch.Tensor, levels: int) -> torch.Tensor:
    """(B, C, H, W): x_sr's detail over `levels` levels + x_up's low band (colour, tone, layout)."""
    high, _ = wavelet_split(x_sr, levels)
    _, low = wavelet_split(x_up, levels)
    return high + low


def adain(x_sr: torch.Tensor, x_up: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B, C, H, W) x_sr with each channel's mean and std set to x_up's (same shape)."""
    mu_sr, mu_up = x_sr.mean((-2, -1), keepdim=True), x_up.mean((-2, -1), keepdim=True)  # (B, C, 1, 1)
    sd_sr, sd_up = x_sr.std((-2, -1), keepdim=True), x_up.std((-2, -1), keepdim=True)
    return (x_sr - mu_sr) / (sd_sr + eps) * sd_up + mu_up


def back_project(x_sr: torch.Tensor, x_lr: torch.Tensor, iterations: int) -> torch.Tensor:
    """(B, C, H, W): `iterations` steps of x <- x + up(x_lr - down(x)), down/up the antialiased
    bicubic resizes of op4ksr.imageops (down is the LR-consistency measure's)."""
    size, lr_size = tuple(x_sr.shape[-2:]), tuple(x_lr.shape[-2:])
    x = x_sr
    for _ in range(iterations):
        x = x + bicubic_resize(x_lr - bicubic_resize(x, lr_size), size)
    return x


def apply_fidelity(x_sr: torch.Tensor, x_lr: torch.Tensor, x_up: torch.Tensor, fidelity: Fidelity) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1]: x_sr (B, 3, H, W) corrected towards x_lr (B, 3, h, w), whose bicubic
    upscale to (H, W) is x_up; x_sr itself for mode none."""
    if fidelity.mode == "none" or fidelity.strength == 0:
        return x_sr
    if fidelity.mode == "wavelet":
        fixed = wavelet_transfer(x_sr, x_up, fidelity.levels)
    elif fidelity.mode == "adain":
        fixed = adain(x_sr, x_up)
    else:
        fixed = back_project(x_sr, x_lr.to(x_sr.dtype), fidelity.iterations)
    return torch.lerp(x_sr, fixed, fidelity.strength).clamp(0, 1)
