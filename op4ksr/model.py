"""OP4KSR: one-step, patch-free super-resolution with a Flux transformer and an F16 VAE.

One forward pass from a low-resolution RGB image to the output size (docs/ARCHITECTURE.md):
bicubic up -> pad to the token multiple -> VAE encode -> pack 2x2 -> transformer at t* ->
z_sr = z_lr - t* v -> unpack -> VAE decode -> crop. The whole image is one token sequence:
there are no tiles anywhere in the model.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch
import torch.nn as nn

from op4ksr.checkpoint import CheckpointError, files_sha256, load_component, save_component, weight_files
from op4ksr.fidelity import Fidelity, apply_fidelity
from op4ksr.imageops import bicubic_resize, pad_to_multiple
from op4ksr.presets import get_preset, preset_model_id
from op4ksr.sizing import output_size
from op4ksr.offload import hold_transformer, load_transformer, move_resident
from op4ksr.transformer import RFRFluxTransformer2DModel
from op4ksr.vae import F16AutoencoderKL

MODEL_INDEX = "model_index.json"
PROMPT_EMBEDS = "prompt_embeds.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PACK = 2  # latent cells per token side (Flux packs 2x2 latent cells into one token)


def pack_latents(z: torch.Tensor) -> torch.Tensor:
    """Tokens (B, h/2 * w/2, 4C) from latents z (B, C, h, w), 2x2 cells per token, row-major."""
    b, c, h, w = z.shape
    z = z.view(b, c, h // PACK, PACK, w // PACK, PACK).permute(0, 2, 4, 1, 3, 5)
    return z.reshape(b, (h // PACK) * (w // PACK), c * PACK * PACK)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Latents (B, C, h, w) from tokens (B, h/2 * w/2, 4C); the inverse of pack_latents."""
    b, _, d = tokens.shape
    c = d // (PACK * PACK)
    z = tokens.view(b, h // PACK, w // PACK, c, PACK, PACK).permute(0, 3, 1, 4, 2, 5)
    return z.reshape(b, c, h, w)


def image_ids(rows: int, cols: int, device=None) -> torch.Tensor:
    """(rows * cols, 3) position ids (0, row, col) of the packed token grid."""
    ids = torch.zeros(rows, cols, 3, device=device)
    ids[..., 1] = torch.arange(rows, device=device)[:, None]
    ids[..., 2] = torch.arange(cols, device=device)[None, :]
    return ids.reshape(rows * cols, 3)


class OP4KSR(nn.Module):
    """The one-step SR model: an F16 VAE, an RFR Flux transformer and fixed prompt embeddings."""

    def __init__(
        self,
        vae: F16AutoencoderKL,
        transformer: RFRFluxTransformer2DModel,
        prompt_embeds: torch.Tensor,
        pooled_embeds: torch.Tensor,
        timestep: float = 1.0,
        guidance: float = 1.0,
        scale: float = 4,
        name: str = "op4ksr",
        model_id: str = "",
    ):
        super().__init__()
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[-1] != transformer.config.joint_attention_dim:
            raise ValueError(
                f"prompt_embeds must be (1, N, {transformer.config.joint_attention_dim}), got {tuple(prompt_embeds.shape)}"
            )
        if pooled_embeds.shape[-1] != transformer.config.pooled_projection_dim:
            raise ValueError(
                f"pooled_embeds must be (1, {transformer.config.pooled_projection_dim}), got {tuple(pooled_embeds.shape)}"
            )
        if transformer.config.in_channels != vae.config.latent_channels * PACK * PACK:
            raise ValueError(
                f"transformer in_channels={transformer.config.in_channels} must be 4 x VAE latent_channels="
                f"{vae.config.latent_channels}"
            )
        if not 0 < timestep <= 1:
            raise ValueError(f"timestep t* must be in (0, 1], got {timestep}")
        self.vae, self.transformer = vae, transformer
        self.register_buffer("prompt_embeds", prompt_embeds, persistent=False)
        self.register_buffer("pooled_embeds", pooled_embeds, persistent=False)
        self.timestep, self.guidance, self.scale = float(timestep), float(guidance), scale
        self.name, self.model_id = name, model_id or name
        self.decode_partitions = 0
        self.fidelity = Fidelity()  # the output-fidelity step after decode (op4ksr.fidelity)

    # --- geometry -----------------------------------------------------------------------------

    @property
    def vae_factor(self) -> int:
        """Output pixels per latent cell along a side (16 for F16)."""
        return self.vae.spatial_factor

    @property
    def token_period_px(self) -> int:
        """Output pixels per transformer token along a side: the period of token artifacts."""
        return self.vae_factor * PACK

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    # --- the one step -------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, H/16, W/16) of images x (B, 3, H, W) in [0, 1]."""
        cfg = self.vae.config
        z = self.vae.encode(2 * x.to(self.dtype) - 1).latent_dist.mode()
        return (z - (cfg.shift_factor or 0.0)) * cfg.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] from normalised latents z."""
        cfg = self.vae.config
        z = z / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        if self.decode_partitions > 1:
            x = self.vae.decode_partitioned(z, self.decode_partitions)
        else:
            x = self.vae.decode(z).sample
        return ((x.float() + 1) / 2).clamp(0, 1)

    def velocity(self, z: torch.Tensor) -> torch.Tensor:
        """The transformer's velocity (B, C, h, w) at t* for latents z (B, C, h, w)."""
        b, _, h, w = z.shape
        t = torch.full((b,), self.timestep, device=z.device, dtype=z.dtype)
        v = self.transformer(
            hidden_states=pack_latents(z),
            encoder_hidden_states=self.prompt_embeds.expand(b, -1, -1).to(z.dtype),
            pooled_projections=self.pooled_embeds.expand(b, -1).to(z.dtype),
            timestep=t,
            guidance=torch.full_like(t, self.guidance) if self.transformer.config.guidance_embeds else None,
            img_ids=image_ids(h // PACK, w // PACK, device=z.device),
            txt_ids=torch.zeros(self.prompt_embeds.shape[1], 3, device=z.device),
            return_dict=False,
        )[0]
        return unpack_latents(v, h, w)

    def forward(self, x_lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """x_sr (B, 3, H, W) in [0, 1] from x_lr (B, 3, h, w) in [0, 1]; differentiable."""
        if x_lr.ndim != 4 or x_lr.shape[1] != 3:
            raise ValueError(f"x_lr must be (B, 3, h, w), got {tuple(x_lr.shape)}")
        height, width = size
        if min(height, width) < self.token_period_px:
            raise ValueError(
                f"output {width}x{height} is below the minimum side of {self.token_period_px} px for this model"
            )
        x_up = bicubic_resize(x_lr.float(), (height, width))
        x_pad, _ = pad_to_multiple(x_up, self.token_period_px)
        z_lr = self.encode(x_pad)
        z_sr = z_lr - self.timestep * self.velocity(z_lr)
        x_sr = self.decode(z_sr)[:, :, :height, :width]  # (B, 3, H, W)
        return apply_fidelity(x_sr, x_lr.float(), x_up, self.fidelity)

    @torch.inference_mode()
    def upscale(self, x_lr: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """x_sr (B, 3, H, W) float32 in [0, 1] on x_lr's device; size defaults to `scale` x input."""
        size = size or output_size(*x_lr.shape[-2:], scale=self.scale)
        return self.forward(x_lr.to(self.device), size).float()

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        rfr_mode: str = "none",
        rfr_scale: float = 1.0,
        weights: str = "dtype",
        offload: str = "none",
    ) -> "OP4KSR":
        """A model with the preset's sizes and seeded random weights, built directly on `device` in `dtype`.

        Parameters are created in `dtype` (no float32 copy first): flux-dev in bfloat16 needs 24 GB
        on the device instead of 48 GB, and device="meta" builds a weightless model for shape work.
        `weights` (dtype | fp8 | int8) and `offload` (none | blocks): op4ksr.offload.hold_transformer."""
        preset = get_preset(name)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        build = "cpu" if offload == "blocks" else device  # streamed blocks wait in host memory
        try:
            with torch.device(build), _default_dtype(dtype):
                vae = F16AutoencoderKL(**preset.vae.config())
                transformer = RFRFluxTransformer2DModel(**preset.transformer.config(), rfr_mode=rfr_mode,
                                                        rfr_scale=rfr_scale)
                prompt = torch.randn(1, preset.prompt_tokens, preset.transformer.joint_attention_dim)
                pooled = torch.randn(1, preset.transformer.pooled_projection_dim)
        finally:
            torch.random.set_rng_state(generator_state)
        model = cls(vae, transformer, prompt, pooled, preset.timestep, preset.guidance, preset.scale,
                    name=name, model_id=preset_model_id(name, seed)).to(dtype).eval()
        hold_transformer(model.transformer, device, weights=weights, offload=offload)
        if offload == "blocks":
            move_resident(model, device)
        return model

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
        weights: str = "dtype", offload: str = "none",
    ) -> "OP4KSR":
        """A model from a checkpoint folder (docs/ARCHITECTURE.md layout); safetensors only.
        `weights` (dtype | fp8 | int8) and `offload` (none | blocks): op4ksr.offload.load_transformer."""
        root = Path(path)
        index_path = root / MODEL_INDEX
        if not index_path.is_file():
            raise CheckpointError(f"{root}: {MODEL_INDEX} is missing; is this an OP4KSR checkpoint folder?")
        index = json.loads(index_path.read_text())
        if index.get("_class_name") != "OP4KSR":
            raise CheckpointError(f"{index_path}: _class_name is {index.get('_class_name')!r}, expected 'OP4KSR'")
        for part in ("vae", "transformer"):
            if not (root / part).is_dir():
                raise CheckpointError(f"{root}: the '{part}/' folder is missing")
        if not (root / PROMPT_EMBEDS).is_file():
            raise CheckpointError(f"{root}: {PROMPT_EMBEDS} is missing (the fixed prompt embeddings)")
        vae = load_component(F16AutoencoderKL, root / "vae", device, dtype)
        transformer = load_transformer(RFRFluxTransformer2DModel, root / "transformer", device, dtype,
                                       weights=weights, offload=offload)
        embeds = {k: v.to(dtype) for k, v in _load_prompt_embeds(root / PROMPT_EMBEDS, device).items()}
        model_id = index.get("model_id") or f"{index.get('name', root.name)}@{_weights_digest(root)[:12]}"
        model = cls(vae, transformer, embeds["encoder_hidden_states"], embeds["pooled"],
                    index.get("timestep", 1.0), index.get("guidance", 1.0), index.get("scale", 4),
                    name=index.get("name", root.name), model_id=model_id)
        model.vae.set_decode_shift(bool(index.get("inference", {}).get("decode_shift", False)))
        model.fidelity = Fidelity.from_options(index.get("inference", {}))
        return model.eval()  # every part is on `device` in `dtype` already (int8 and fp8 layers as they must be)

    # --- inference options --------------------------------------------------------------------

    def inference_options(self) -> dict:
        """The inference options in effect, as a checkpoint saves them (op4ksr.loading.SAVED_OPTIONS)."""
        cfg = self.transformer.config
        return {"rfr_mode": cfg.rfr_mode, "rfr_scale": float(cfg.rfr_scale), "decode_shift": self.vae.decode_shift,
                **self.fidelity.options()}

    def configure(self, options) -> "OP4KSR":
        """Apply an op4ksr.loading.InferenceOptions (None fields keep the saved values); returns self."""
        current = self.inference_options()
        wanted = current | options.overrides()
        if (wanted["rfr_mode"], wanted["rfr_scale"]) != (current["rfr_mode"], current["rfr_scale"]):
            self.transformer.set_rfr(wanted["rfr_mode"], float(wanted["rfr_scale"]))
        if wanted["decode_shift"] != current["decode_shift"]:
            self.vae.set_decode_shift(bool(wanted["decode_shift"]))
        if options.attention_backend:
            self.transformer.set_attention_backend(options.attention_backend)
        self.decode_partitions = int(options.decode_partitions)
        self.fidelity = Fidelity.from_options(wanted)
        return self

    def save_pretrained(self, path: str | Path) -> None:
        """Write the checkpoint folder: model_index.json, vae/, transformer/, prompt_embeds."""
        from safetensors.torch import save_file

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        save_component(self.vae, root / "vae")
        save_component(self.transformer, root / "transformer")
        save_file({"encoder_hidden_states": self.prompt_embeds.detach().float().cpu().contiguous(),
                   "pooled": self.pooled_embeds.detach().float().cpu().contiguous()}, str(root / PROMPT_EMBEDS))
        write_model_index(root, name=self.name, timestep=self.timestep, guidance=self.guidance, scale=self.scale,
                          inference=self.inference_options())


def write_model_index(root: Path, *, name: str, timestep: float, guidance: float, scale: float, inference: dict,
                      source: dict | None = None, weights: str = "dtype") -> dict:
    """Write model_index.json beside the weights already in `root` (their digest is the model's id); returns it.
    `weights`: int8 when the transformer's block Linears are stored int8 (op4ksr.quantize)."""
    digest = _weights_digest(root)
    index = {"_class_name": "OP4KSR", "name": name, "timestep": timestep, "guidance": guidance, "scale": scale,
             "weights_sha256": digest, "model_id": f"{name}@{digest[:12]}", "inference": inference}
    if weights != "dtype":
        index["weights"] = weights  # read before loading (op4ksr.loading.check_stored_weights)
    if source is not None:
        index["source"] = source  # what an imported checkpoint was built from (op4ksr.importing)
    (root / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return index


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    """Make `dtype` torch's default floating dtype inside the block (new parameters are created in it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _load_prompt_embeds(path: Path, device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    embeds = load_file(str(path), device=str(device))
    missing = {"encoder_hidden_states", "pooled"} - set(embeds)
    if missing:
        raise CheckpointError(f"{path}: missing tensors {', '.join(sorted(missing))}")
    return embeds


def _weights_digest(root: Path) -> str:
    """sha256 over every weight file of the checkpoint (the model's identity in reports)."""
    return files_sha256(weight_files(root / "vae") + weight_files(root / "transformer") + [root / PROMPT_EMBEDS])


def parse_dtype(name: str) -> torch.dtype:
    """torch dtype for a config name (float32 | bfloat16 | float16)."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def estimate_tflop(height: int, width: int, preset: str = "flux-dev") -> float:
    """Transformer TFLOP of one forward at a (height, width) output: 24nd^2 + 4n^2d per block."""
    p = get_preset(preset)
    t, token_px, d = p.transformer, p.vae.factor * PACK, p.transformer.width
    n = math.ceil(height / token_px) * math.ceil(width / token_px) + p.prompt_tokens
    blocks = t.num_layers + t.num_single_layers
    return blocks * (24 * n * d * d + 4 * n * n * d) / 1e12
