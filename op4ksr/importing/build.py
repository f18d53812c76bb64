"""`import_checkpoint(spec)`: public Flux weights (+ F16 VAE, + LoRA) -> an OP4KSR checkpoint folder.

Everything that can be refused is checked first, from configs and safetensors headers alone
(the base's layout, every key and shape, every LoRA module); then the prompt is encoded, the
transformer and VAE are copied a tensor at a time with the LoRA merged, and model_index.json is
written last, so a folder with one is complete. Local folders only: the `op4ksr import` job
fetches object-store prefixes first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import op4ksr
from op4ksr.checkpoint import CheckpointError
from op4ksr.errors import UserError
from op4ksr.importing.components import copy_component, meta_component, read_public_config
from op4ksr.importing.lora import LoraAdapter, merged_deltas, read_lora
from op4ksr.importing.prompt import default_max_sequence_length, encode_prompt, read_prompt_embeds
from op4ksr.loading import SAVED_OPTIONS
from op4ksr.model import PROMPT_EMBEDS, parse_dtype, write_model_index
from op4ksr.transformer import RFRFluxTransformer2DModel
from op4ksr.vae import F16AutoencoderKL

PIPELINE_CLASS, TRANSFORMER_CLASS, VAE_CLASS = "FluxPipeline", "FluxTransformer2DModel", "AutoencoderKL"


@dataclass(frozen=True, kw_only=True)
class ImportSpec:
    """What to build an OP4KSR checkpoint from (local paths) and the one-step constants to save with it."""

    base: Path  # a FluxPipeline folder, or a FluxTransformer2DModel folder (then vae and prompt_embeds)
    out: Path
    vae: Path | None = None  # an AutoencoderKL folder; "stride" in its config gives the layout
    vae_stride: int | None = None  # overrides the VAE config's stride: 2 = F16, 1 = stock 8x
    loras: tuple[Path, ...] = ()
    prompt: str = ""
    prompt_embeds: Path | None = None
    max_sequence_length: int | None = None  # None: 512 with guidance embeddings, 256 without
    timestep: float = 1.0
    guidance: float = 1.0
    scale: float = 4
    name: str = ""
    dtype: str = "bfloat16"
    weights: str = "dtype"  # dtype | int8: the transformer blocks' Linears stored int8 per output channel
    decode_shift: bool = False
    labels: tuple[tuple[str, str], ...] = ()  # local path -> how `source` names it (the s3:// uri it came from)


@dataclass(frozen=True)
class _Plan:
    transformer_dir: Path
    vae_dir: Path
    transformer: RFRFluxTransformer2DModel  # meta device
    vae: F16AutoencoderKL  # meta device
    adapters: list[LoraAdapter]
    transformer_deltas: dict  # weight key -> LoRA pairs (op4ksr.importing.lora.merged_deltas)
    vae_deltas: dict
    pipeline: bool  # the base is a FluxPipeline folder (its text encoders give the prompt embeddings)


def import_checkpoint(spec: ImportSpec) -> dict:
    """Build the checkpoint at spec.out; returns its model_index.json. CheckpointError/LoraError name the bad input."""
    if spec.out.exists() and any(spec.out.iterdir()):
        raise CheckpointError(f"--out {spec.out} exists and is not empty; remove it or choose another folder")
    dtype = parse_dtype(spec.dtype)
    plan = _plan(spec)
    embeds, pooled, text = _prompt(spec, plan)
    spec.out.mkdir(parents=True, exist_ok=True)
    copy_component(plan.transformer, plan.transformer_dir, spec.out / "transformer", dtype, plan.transformer_deltas,
                   int8=spec.weights == "int8")
    copy_component(plan.vae, plan.vae_dir, spec.out / "vae", dtype, plan.vae_deltas)
    from safetensors.torch import save_file

    save_file({"encoder_hidden_states": embeds.contiguous(), "pooled": pooled.contiguous()}, str(spec.out / PROMPT_EMBEDS))
    inference = dict(SAVED_OPTIONS, decode_shift=bool(spec.decode_shift))
    return write_model_index(spec.out, name=spec.name or _label(spec, spec.base).rstrip("/").rsplit("/", 1)[-1],
                             timestep=spec.timestep, guidance=spec.guidance, scale=spec.scale,
                             inference=inference, source=_source(spec, plan, text), weights=spec.weights)


def _plan(spec: ImportSpec) -> _Plan:
    """Every check that needs no weights: layout, configs, keys and shapes, LoRA modules and shapes."""
    base = spec.base
    if spec.weights not in ("dtype", "int8"):
        raise UserError(f"--weights {spec.weights}: choose dtype or int8")
    if not 0 < spec.timestep <= 1:
        raise UserError(f"--timestep {spec.timestep}: t* must be in (0, 1]")
    if (base / "model_index.json").is_file():
        index = json.loads((base / "model_index.json").read_text())
        if index.get("_class_name") != PIPELINE_CLASS:
            raise CheckpointError(f"{_label(spec, base)}/model_index.json is a {index.get('_class_name')!r}; "
                                  f"give a {PIPELINE_CLASS} folder (FLUX.1-dev, FLUX.1-schnell)")
        pipeline, transformer_dir, vae_dir = True, base / "transformer", spec.vae or base / "vae"
    elif (base / "config.json").is_file():
        if spec.vae is None or spec.prompt_embeds is None:
            raise CheckpointError(f"--base {_label(spec, base)} is a bare transformer folder: give --vae and "
                                  "--prompt-embeds too (or a FluxPipeline folder)")
        pipeline, transformer_dir, vae_dir = False, base, spec.vae
    else:
        raise CheckpointError(f"--base {_label(spec, base)}: no model_index.json or config.json there; give a "
                              f"{PIPELINE_CLASS} folder or a {TRANSFORMER_CLASS} folder")
    transformer = meta_component(RFRFluxTransformer2DModel, read_public_config(transformer_dir, TRANSFORMER_CLASS))
    vae_config = read_public_config(vae_dir, VAE_CLASS)
    stride = spec.vae_stride or int(vae_config.get("stride", 1))  # stock AutoencoderKL configs have no stride: 8x
    if stride not in (1, 2):
        raise UserError(f"VAE stride {stride} (from {'--vae-stride' if spec.vae_stride else 'its config'}): use 1 or 2")
    vae = meta_component(F16AutoencoderKL, {**vae_config, "input_stride": stride})
    if spec.decode_shift and stride != 2:
        raise UserError(f"--decode-shift needs a stride-2 (F16) VAE; this one has stride {stride}")
    vae.set_decode_shift(spec.decode_shift)
    if transformer.config.in_channels != 4 * vae.config.latent_channels:
        raise CheckpointError(f"transformer in_channels={transformer.config.in_channels} does not fit the VAE's "
                              f"latent_channels={vae.config.latent_channels} (needs 4x)")
    adapters = [a for path in spec.loras for a in read_lora(path, _label(spec, path))]
    # a mismatching LoRA is refused here, before any work
    transformer_deltas = merged_deltas(adapters, _shapes(transformer), "transformer", "transformer")
    vae_deltas = merged_deltas(adapters, _shapes(vae), "vae.encoder", "VAE")
    return _Plan(transformer_dir, vae_dir, transformer, vae, adapters, transformer_deltas, vae_deltas, pipeline)


def _prompt(spec: ImportSpec, plan: _Plan):
    """(embeds, pooled, what the source section records about them), checked against the transformer."""
    cfg = plan.transformer.config
    if spec.prompt_embeds is not None:
        embeds, pooled = read_prompt_embeds(spec.prompt_embeds)
        text = {"prompt_embeds": _label(spec, spec.prompt_embeds)}
    else:
        length = spec.max_sequence_length or default_max_sequence_length(cfg.guidance_embeds)
        embeds, pooled = encode_prompt(spec.base, spec.prompt, length)
        text = {"prompt": spec.prompt, "max_sequence_length": length}
    if embeds.shape[-1] != cfg.joint_attention_dim or pooled.shape[-1] != cfg.pooled_projection_dim:
        raise CheckpointError(f"prompt embeddings {tuple(embeds.shape)} / pooled {tuple(pooled.shape)} do not fit "
                              f"the transformer (joint_attention_dim={cfg.joint_attention_dim}, "
                              f"pooled_projection_dim={cfg.pooled_projection_dim})")
    return embeds, pooled, text


def _source(spec: ImportSpec, plan: _Plan, text: dict) -> dict:
    return {"base": _label(spec, spec.base), "base_kind": "pipeline" if plan.pipeline else "transformer",
            "vae": _label(spec, spec.vae) if spec.vae else None, "vae_stride": plan.vae.config.input_stride,
            "loras": [a.describe() for a in plan.adapters], **text, "dtype": spec.dtype, "weights": spec.weights,
            "op4ksr_version": op4ksr.__version__}


def _label(spec: ImportSpec, path: Path) -> str:
    return dict(spec.labels).get(str(path), str(path))


def _shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}
