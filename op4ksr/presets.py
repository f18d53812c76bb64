"""Model presets: component configs for a model built with random (seeded) weights.

`tiny` runs on a laptop CPU in seconds and exists for tests, demos and CI; `flux-dev` has the
FLUX.1-dev transformer sizes (19 double + 38 single blocks, width 3072) and the F16 VAE sizes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class TransformerParams:
    """The RFR Flux transformer's sizes (diffusers' FluxTransformer2DModel arguments), checked once here."""

    num_layers: int  # double-stream blocks
    num_single_layers: int
    attention_head_dim: int
    num_attention_heads: int
    joint_attention_dim: int  # the prompt embeddings' width
    pooled_projection_dim: int
    guidance_embeds: bool
    axes_dims_rope: tuple[int, int, int]  # RoPE dims of (text, row, column); they add up to a head

    def __post_init__(self) -> None:
        _positive(self, "num_layers", "attention_head_dim", "num_attention_heads", "joint_attention_dim",
                  "pooled_projection_dim")
        if self.num_single_layers < 0:
            raise ValueError(f"num_single_layers={self.num_single_layers} must be at least 0")
        if len(self.axes_dims_rope) != 3 or any(d <= 0 or d % 2 for d in self.axes_dims_rope) \
                or sum(self.axes_dims_rope) != self.attention_head_dim:
            raise ValueError(f"axes_dims_rope={self.axes_dims_rope} must be three positive even dims adding up to "
                             f"attention_head_dim={self.attention_head_dim}")

    @property
    def width(self) -> int:
        return self.attention_head_dim * self.num_attention_heads

    def config(self) -> dict:
        """The keyword arguments of the transformer's constructor."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class VAEParams:
    """The F16 VAE's sizes (op4ksr.vae.F16AutoencoderKL arguments), checked once here."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    latent_channels: int
    norm_num_groups: int
    scaling_factor: float
    shift_factor: float
    use_quant_conv: bool
    use_post_quant_conv: bool
    mid_block_add_attention: bool
    input_stride: int  # 2: the F16 VAE (16x per side); 1: an 8x one

    def __post_init__(self) -> None:
        _positive(self, "layers_per_block", "latent_channels", "norm_num_groups")
        if not self.block_out_channels or any(c <= 0 or c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"block_out_channels={self.block_out_channels} must be positive multiples of "
                             f"norm_num_groups={self.norm_num_groups}")
        if self.input_stride not in (1, 2):
            raise ValueError(f"input_stride={self.input_stride} must be 1 or 2")

    @property
    def factor(self) -> int:
        """Image px per latent cell, per side."""
        return self.input_stride * 2 ** (len(self.block_out_channels) - 1)

    def config(self) -> dict:
        """The keyword arguments of the VAE's constructor."""
        return asdict(self)


def _positive(params, *names: str) -> None:
    for name in names:
        if getattr(params, name) <= 0:
            raise ValueError(f"{name}={getattr(params, name)} must be positive")


@dataclass(frozen=True)
class Preset:
    transformer: TransformerParams
    vae: VAEParams
    prompt_tokens: int
    # one-step sampling constants (the paper leaves them open; the project makes them config)
    timestep: float = 1.0
    guidance: float = 1.0
    scale: int = 4
    extra: dict = field(default_factory=dict)


FLUX_VAE = VAEParams(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
    mid_block_add_attention=True,
    input_stride=2,
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        transformer=TransformerParams(
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        ),
        vae=replace(FLUX_VAE, block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=16),
        prompt_tokens=8,
    ),
    "flux-dev": Preset(
        transformer=TransformerParams(
            num_layers=19,
            num_single_layers=38,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=4096,
            pooled_projection_dim=768,
            guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        ),
        vae=FLUX_VAE,
        prompt_tokens=512,
    ),
}


def preset_model_id(name: str, seed: int) -> str:
    """The model_id of a preset's seeded random weights (reports and params_hash use it)."""
    return f"preset:{name}:seed{seed}"


def get_preset(name: str) -> Preset:
    """The named preset; ValueError listing the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# checkpoints shipped inside the package, addressable by name wherever a checkpoint path is taken
SHIPPED_CHECKPOINTS = {"tiny-trained": Path(__file__).resolve().parent / "assets" / "tiny-trained"}
# the model a command runs when none is named: trained weights, never a random preset
DEFAULT_MODEL = "tiny-trained"
