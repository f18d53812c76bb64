"""Which parameters train: the transformer (full, LoRA or frozen) and the VAE (frozen, decoder, all).

LoRA adapters come from peft, injected through diffusers' `add_adapter`. Checkpoints stay in the
plain DESIGN.md layout: the saved transformer has the adapters merged into its weights, so
inference never needs peft; the adapter weights are kept separately in the train state.
"""
from __future__ import annotations

import torch

from op4ksr.model import OP4KSR
from op4ksr.training.config import TrainConfig

ADAPTER = "default"


def zero_init_proj_out(model: OP4KSR) -> None:
    """Zero the transformer's last projection: the velocity starts at 0, so the one-step output
    starts at the VAE reconstruction of the bicubic upscale instead of random-weight noise."""
    with torch.no_grad():
        model.transformer.proj_out.weight.zero_()
        model.transformer.proj_out.bias.zero_()


def add_lora(model: OP4KSR, cfg: TrainConfig) -> None:
    """Inject LoRA adapters into the transformer; their random init is seeded by cfg.seed."""
    from peft import LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model.transformer.add_adapter(
            LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets),
                       init_lora_weights=True),
            adapter_name=ADAPTER,
        )


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
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def has_lora(model: OP4KSR) -> bool:
    return any("lora_" in name for name, _ in model.transformer.named_parameters())


def lora_state_dict(model: OP4KSR) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model.transformer).items()}


def load_lora_state_dict(model: OP4KSR, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(model.transformer, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"LoRA state has keys the model does not: {', '.join(unexpected[:5])}")


def merged_transformer_state(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The transformer's plain state dict with every LoRA delta added to its base weight."""
    from peft.tuners.lora import LoraLayer

    state = {}
    for key, value in transformer.state_dict().items():
        if "lora_" not in key:
            state[key.replace(".base_layer.", ".")] = value.detach()
    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            base = module.get_base_layer().weight
            state[f"{name}.weight"] = (base + module.get_delta_weight(ADAPTER).to(base.dtype)).detach()
    return state


def inference_view(model: OP4KSR) -> OP4KSR:
    """A plain OP4KSR sharing the VAE and embeddings with `model`, its transformer LoRA-merged (the
    model itself when it has no adapters). Built on the meta device and assigned, so the only new
    memory is the merged weights."""
    if not has_lora(model):
        return model
    cls = type(model.transformer)
    with torch.device("meta"):
        plain = cls.from_config({k: v for k, v in model.transformer.config.items() if not k.startswith("_")})
    plain.load_state_dict(merged_transformer_state(model.transformer), assign=True)
    view = OP4KSR(model.vae, plain, model.prompt_embeds, model.pooled_embeds, model.timestep, model.guidance,
                  model.scale, name=model.name)
    return view.eval()
