"""Which parameters train: the transformer (full, LoRA or frozen) and the VAE (frozen, decoder, all,
or LoRA on its encoder).

LoRA adapters come from peft (`inject_adapter_in_model`). Checkpoints stay in the plain docs/ARCHITECTURE.md
layout: the saved transformer and VAE have their adapters merged into the weights, so inference
never needs peft; the adapter weights are kept separately in the train state.
"""
from __future__ import annotations

import torch

from op4ksr.model import OP4KSR
from op4ksr.training.config import TrainConfig

ADAPTER = "default"
# OMGSR-F's VAE-encoder LoRA targets (wuer5/OMGSR train/train_omgsr_f.py, set_vae_encoder_lora):
# every conv of the resnets, the downsamplers and the in/out convs, and the mid-block attention
VAE_ENCODER_LORA_TARGETS = ("conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out",
                            "to_q", "to_k", "to_v", "to_out.0")


def zero_init_proj_out(model: OP4KSR) -> None:
    """Zero the transformer's last projection: the velocity starts at 0, so the one-step output
    starts at the VAE reconstruction of the bicubic upscale instead of random-weight noise."""
    with torch.no_grad():
        model.transformer.proj_out.weight.zero_()
        model.transformer.proj_out.bias.zero_()


def _inject(module: torch.nn.Module, rank: int, alpha: float, targets, seed: int) -> None:
    from op4ksr.extras import require

    peft = require("peft", "train", "training LoRA adapters (train.transformer=lora, train.vae=encoder_lora)")
    LoraConfig, inject_adapter_in_model = peft.LoraConfig, peft.inject_adapter_in_model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets),
                                           init_lora_weights=True), module, adapter_name=ADAPTER)


def add_lora(model: OP4KSR, cfg: TrainConfig) -> None:
    """Inject the LoRA adapters cfg asks for (transformer, VAE encoder); their init is seeded by cfg.seed."""
    if cfg.transformer == "lora" and cfg.objective == "sr":
        _inject(model.transformer, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.seed)
    if cfg.vae == "encoder_lora":
        _inject(model.vae.encoder, cfg.vae_lora_rank, cfg.vae_lora_alpha, VAE_ENCODER_LORA_TARGETS, cfg.seed + 1)


def set_trainable(model: OP4KSR, cfg: TrainConfig) -> list[tuple[str, torch.nn.Parameter]]:
    """Mark the parameters that train per cfg and return them as (name, parameter), in a fixed order."""
    model.requires_grad_(False)
    if cfg.objective == "sr":
        if cfg.transformer == "full":
            model.transformer.requires_grad_(True)
        elif cfg.transformer == "lora":
            for name, p in model.transformer.named_parameters():
                p.requires_grad_("lora_" in name)
    if cfg.vae == "decoder":
        model.vae.decoder.requires_grad_(True)
        if model.vae.post_quant_conv is not None:
            model.vae.post_quant_conv.requires_grad_(True)
    elif cfg.vae == "all":
        model.vae.requires_grad_(True)
    elif cfg.vae == "encoder_lora":
        for name, p in model.vae.encoder.named_parameters():
            p.requires_grad_("lora_" in name)
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def has_lora(model: torch.nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def lora_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter tensors of a (full) model state dict, on the CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in state.items() if "lora_" in k}


def load_lora_state_dict(model: OP4KSR, state: dict[str, torch.Tensor]) -> None:
    """Load adapter tensors saved by `lora_state_dict`; every adapter of model must be in it."""
    expected = {k for k in model.state_dict() if "lora_" in k}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"LoRA state does not match the model's adapters: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}; resume with the same train.* LoRA settings")
    model.load_state_dict(state, strict=False)


def merged_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's plain state dict with every LoRA delta added to its base weight."""
    from peft.tuners.lora import LoraLayer

    state = {}
    for key, value in module.state_dict().items():
        if "lora_" not in key:
            state[key.replace(".base_layer.", ".")] = value.detach()
    for name, layer in module.named_modules():
        if isinstance(layer, LoraLayer) and ADAPTER in layer.lora_A:
            base = layer.get_base_layer().weight
            state[f"{name}.weight"] = (base + layer.get_delta_weight(ADAPTER).to(base.dtype)).detach()
    return state


def _plain_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A module of the same class and config without adapters, holding the merged weights."""
    if not has_lora(module):
        return module
    cls = type(module)
    with torch.device("meta"):
        plain = cls.from_config({k: v for k, v in module.config.items() if not k.startswith("_")})
    plain.load_state_dict(merged_state(module), assign=True)
    return plain


def inference_view(model: OP4KSR) -> OP4KSR:
    """A plain OP4KSR sharing the embeddings with `model`, its transformer and VAE LoRA-merged (the
    model itself when it has no adapters). Built on the meta device and assigned, so the only new
    memory is the merged weights."""
    if not has_lora(model):
        return model
    view = OP4KSR(_plain_copy(model.vae), _plain_copy(model.transformer), model.prompt_embeds, model.pooled_embeds,
                  model.timestep, model.guidance, model.scale, name=model.name)
    view.fidelity = model.fidelity  # the inference options the checkpoint saves travel with the weights
    view.vae.set_decode_shift(model.vae.decode_shift)
    return view.eval()
