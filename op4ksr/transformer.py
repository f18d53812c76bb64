"""The Flux transformer with RFR as registered config, so it survives save/load."""
from __future__ import annotations

from diffusers import FluxTransformer2DModel
from diffusers.configuration_utils import register_to_config

from op4ksr.rope import RFRPosEmbed, rfr_axis_thetas


class RFRFluxTransformer2DModel(FluxTransformer2DModel):
    """FluxTransformer2DModel whose RoPE base is `rope_theta`, rescaled on the spatial axes by RFR.

    Every argument is listed explicitly: with **kwargs, register_to_config would record an
    entry that save_pretrained cannot serialise (checked with diffusers 0.42.1).
    """

    @register_to_config
    def __init__(
        self,
        patch_size: int = 1,
        in_channels: int = 64,
        out_channels: int | None = None,
        num_layers: int = 19,
        num_single_layers: int = 38,
        attention_head_dim: int = 128,
        num_attention_heads: int = 24,
        joint_attention_dim: int = 4096,
        pooled_projection_dim: int = 768,
        guidance_embeds: bool = False,
        axes_dims_rope: tuple[int, int, int] = (16, 56, 56),
        rope_theta: float = 10000.0,
        rfr_mode: str = "none",
        rfr_scale: float = 1.0,
    ):
        super().__init__(
            patch_size=patch_size,
            in_channels=in_channels,
            out_channels=out_channels,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=joint_attention_dim,
            pooled_projection_dim=pooled_projection_dim,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=tuple(axes_dims_rope),
        )
        if sum(axes_dims_rope) != attention_head_dim:
            raise ValueError(f"axes_dims_rope {tuple(axes_dims_rope)} must sum to attention_head_dim={attention_head_dim}")
        thetas = rfr_axis_thetas(rope_theta, tuple(axes_dims_rope), rfr_mode, rfr_scale)
        self.pos_embed = RFRPosEmbed(thetas, tuple(axes_dims_rope))

    def set_rfr(self, mode: str, scale: float) -> None:
        """Switch RFR in place (calibration sweeps); the change is recorded in the config."""
        thetas = rfr_axis_thetas(self.config.rope_theta, tuple(self.config.axes_dims_rope), mode, scale)
        self.pos_embed = RFRPosEmbed(thetas, tuple(self.config.axes_dims_rope))
        self.register_to_config(rfr_mode=mode, rfr_scale=float(scale))
