"""Model presets: component configs for a model built with random (seeded) weights.

`tiny` runs on a laptop CPU in seconds and exists for tests, demos and CI; `flux-dev` has the
FLUX.1-dev transformer sizes (19 double + 38 single blocks, width 3072) and the F16 VAE sizes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Preset:
    transformer: dict
    vae: dict
    prompt_tokens: int
    # one-step sampling constants (the paper leaves them open; the project makes them config)
    timestep: float = 1.0
    guidance: float = 1.0
    scale: int = 4
    extra: dict = field(default_factory=dict)


FLUX_VAE = dict(
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
        transformer=dict(
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        ),
        vae=dict(FLUX_VAE, block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=16),
        prompt_tokens=8,
    ),
    "flux-dev": Preset(
        transformer=dict(
            num_layers=19,
            num_single_layers=38,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=4096,
            pooled_projection_dim=768,
            guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        ),
        vae=dict(FLUX_VAE),
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
