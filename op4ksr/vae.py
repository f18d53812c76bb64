"""The F16 VAE: Flux's AutoencoderKL layout at 16x per side instead of 8x.

Two changes to the stock layout (the F16 design of Diffusion-4K / UltraFlux), neither of which
adds or renames a parameter, so stock Flux VAE weights load with strict=True:
  * the encoder's `conv_in` convolves with stride 2;
  * the decoder's `conv_out` upsamples 2x (nearest) before convolving.

The decoder's last stage runs at full output resolution and dominates decode memory at 4K
(128 channels at 2048x2048 before the 2x upsample to 4096x4096). `decode_partitioned` runs that
stage in horizontal strips with a halo; GroupNorm statistics are computed over the whole image
(a second pass where needed), so the result matches the whole decode up to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import register_to_config

from op4ksr.errors import UserError


class UpsampleConv2d(nn.Conv2d):
    """A Conv2d that first upsamples its input (nearest); same parameters as a plain Conv2d.

    `shift` reproduces UltraFlux's partitioned decoder (ultraflux/vae.py, Decoder.forward): it
    zero-pads one input row and column at the top-left before upsampling and crops one output
    pixel from the top-left, so its output is ours moved by +1 row and +1 column (row 0 and
    column 0 come from the zero padding). Decoders fine-tuned through that code expect it.
    """

    def __init__(self, *args, upsample: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.upsample = upsample
        self.shift = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.shift:
            return super().forward(F.interpolate(x, scale_factor=self.upsample, mode="nearest"))
        return self.shifted_rows(x, pad_top=True)[..., 1 : 1 + x.shape[-2] * self.upsample, :]

    def shifted_rows(self, x: torch.Tensor, pad_top: bool) -> torch.Tensor:
        """The shifted convolution of rows x (B, C, h, w) -> (B, C', s*(h + pad_top), s*w), columns already cropped."""
        x = F.pad(x, (1, 0, 1 if pad_top else 0, 0))  # zeros, as UltraFlux pads after the activation
        y = super().forward(F.interpolate(x, scale_factor=self.upsample, mode="nearest"))
        return y[..., 1 : 1 + (x.shape[-1] - 1) * self.upsample]


class F16AutoencoderKL(AutoencoderKL):
    """AutoencoderKL with a stride-`input_stride` conv_in and an upsampling conv_out."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",) * 4,
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",) * 4,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        act_fn: str = "silu",
        latent_channels: int = 16,
        norm_num_groups: int = 32,
        sample_size: int = 1024,
        scaling_factor: float = 0.3611,
        shift_factor: float | None = 0.1159,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
        force_upcast: bool = True,
        use_quant_conv: bool = False,
        use_post_quant_conv: bool = False,
        mid_block_add_attention: bool = True,
        input_stride: int = 2,
    ):
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            latents_mean=latents_mean,
            latents_std=latents_std,
            force_upcast=force_upcast,
            use_quant_conv=use_quant_conv,
            use_post_quant_conv=use_post_quant_conv,
            mid_block_add_attention=mid_block_add_attention,
        )
        if input_stride < 1:
            raise ValueError(f"input_stride must be >= 1, got {input_stride}")
        self.encoder.conv_in.stride = (input_stride, input_stride)
        old = self.decoder.conv_out
        self.decoder.conv_out = UpsampleConv2d(
            old.in_channels, old.out_channels, old.kernel_size, padding=old.padding, upsample=input_stride
        )

    @property
    def decode_shift(self) -> bool:
        """True when decoding reproduces UltraFlux's partitioned decoder (+1 row, +1 column)."""
        return self.decoder.conv_out.shift

    def set_decode_shift(self, shift: bool) -> None:
        """Turn UltraFlux's 1-px decode shift on or off; it exists only for the stride-2 (F16) layout."""
        if shift and self.config.input_stride != 2:
            raise UserError(f"decode_shift needs a stride-2 (F16) VAE; this one has input_stride={self.config.input_stride}")
        self.decoder.conv_out.shift = bool(shift)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent cell along each side (16 for the F16 layout)."""
        return self.config.input_stride * 2 ** (len(self.config.block_out_channels) - 1)

    def decode_partitioned(self, z: torch.Tensor, partitions: int, halo: int = 2) -> torch.Tensor:
        """Decoded image (B, C, H, W) from latent z, the full-resolution last stage in `partitions` strips."""
        if partitions < 1 or halo < 2:
            raise ValueError(f"need partitions >= 1 and halo >= 2, got partitions={partitions}, halo={halo}")
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        dec = self.decoder
        x = dec.mid_block(dec.conv_in(z), None)
        for block in dec.up_blocks[:-1]:
            x = block(x, None)
        for resnet in dec.up_blocks[-1].resnets:
            x = _resnet_in_strips(resnet, x, partitions, halo)
        return _output_head_in_strips(dec, x, partitions)


# --- strip-wise evaluation with whole-image GroupNorm statistics -----------------------------


def _strips(height: int, partitions: int) -> list[tuple[int, int]]:
    edges = torch.linspace(0, height, min(partitions, height) + 1).round().long().tolist()
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _group_moments(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(batch, group) sum and sum of squares of x (B, C, H, W), in float64."""
    xg = x.double().reshape(x.shape[0], groups, -1)
    return xg.sum(-1), xg.pow(2).sum(-1)


def _stats(total: torch.Tensor, total_sq: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean = total / count
    return mean, (total_sq / count - mean.pow(2)).clamp_min(0)


def _group_norm(x: torch.Tensor, norm: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """nn.GroupNorm applied to x with given (B, G) statistics instead of x's own."""
    b, c, h, w = x.shape
    g = norm.num_groups
    inv = torch.rsqrt(var.float() + norm.eps)[:, :, None, None, None]
    y = (x.float().reshape(b, g, c // g, h, w) - mean.float()[:, :, None, None, None]) * inv
    y = y.reshape(b, c, h, w)
    if norm.affine:
        y = y * norm.weight.float()[None, :, None, None] + norm.bias.float()[None, :, None, None]
    return y.to(x.dtype)


def _whole_stats(x: torch.Tensor, norm: nn.GroupNorm, rows: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    # summed a band of rows at a time: a float64 copy of the whole tensor would cost 4-8x its size
    total = total_sq = 0
    for a in range(0, x.shape[-2], rows):
        s, s2 = _group_moments(x[:, :, a : a + rows], norm.num_groups)
        total, total_sq = total + s, total_sq + s2
    return _stats(total, total_sq, x[0].numel() // norm.num_groups)


def _resnet_in_strips(resnet, x: torch.Tensor, partitions: int, halo: int) -> torch.Tensor:
    """A diffusers ResnetBlock2D (no temb, no resampling) evaluated strip by strip."""
    if resnet.upsample is not None or resnet.downsample is not None or resnet.time_emb_proj is not None:
        raise ValueError("strip evaluation supports plain ResnetBlock2D only (no resampling, no temb)")
    height = x.shape[-2]
    mean1, var1 = _whole_stats(x, resnet.norm1)

    def conv1(lo: int, hi: int) -> torch.Tensor:
        return resnet.conv1(resnet.nonlinearity(_group_norm(x[:, :, lo:hi], resnet.norm1, mean1, var1)))

    # pass 1: statistics of conv1's output, each row counted once
    groups = resnet.norm2.num_groups
    total = total_sq = 0
    for a, b in _strips(height, partitions):
        lo, hi = max(0, a - 1), min(height, b + 1)
        h = conv1(lo, hi)[:, :, a - lo : a - lo + (b - a)]
        s, s2 = _group_moments(h, groups)
        total, total_sq = total + s, total_sq + s2
    mean2, var2 = _stats(total, total_sq, height * x.shape[-1] * resnet.conv1.out_channels // groups)

    # pass 2: the block's output, two 3x3 convs deep, so a halo of 2 rows is exact
    out = torch.empty(x.shape[0], resnet.conv2.out_channels, *x.shape[-2:], dtype=x.dtype, device=x.device)
    for a, b in _strips(height, partitions):
        lo, hi = max(0, a - halo), min(height, b + halo)
        h = resnet.nonlinearity(_group_norm(conv1(lo, hi), resnet.norm2, mean2, var2))
        h = resnet.conv2(resnet.dropout(h))[:, :, a - lo : a - lo + (b - a)]
        skip = x[:, :, a:b]
        if resnet.conv_shortcut is not None:
            skip = resnet.conv_shortcut(skip)
        out[:, :, a:b] = (skip + h) / resnet.output_scale_factor
    return out


def _output_head_in_strips(dec, x: torch.Tensor, partitions: int) -> torch.Tensor:
    """conv_norm_out -> conv_act -> conv_out (with its upsample) evaluated strip by strip."""
    height, up = x.shape[-2], dec.conv_out.upsample
    mean, var = _whole_stats(x, dec.conv_norm_out)
    out = torch.empty(
        x.shape[0], dec.conv_out.out_channels, height * up, x.shape[-1] * up, dtype=x.dtype, device=x.device
    )
    shift = dec.conv_out.shift
    for a, b in _strips(height, partitions):
        lo, hi = max(0, a - 1), min(height, b + 1)
        h = dec.conv_act(_group_norm(x[:, :, lo:hi], dec.conv_norm_out, mean, var))
        if shift:
            # output row r is the unshifted row r - 1: every strip starts one upsampled row above its
            # first row (its halo row, or the zero row above the image for the first strip)
            h = dec.conv_out.shifted_rows(h, pad_top=a == 0)
            out[:, :, a * up : b * up] = h[:, :, 1 : 1 + (b - a) * up]
        else:
            h = dec.conv_out(h)
            out[:, :, a * up : b * up] = h[:, :, (a - lo) * up : (a - lo + b - a) * up]
    return out
