"""Per-GPU peak memory of training the transformer, against crop size, strategy and checkpointing.

The training sibling of op4ksr/inference/memory_plan.py (inference). Analytic, counted from a weightless
(meta) build of the preset; nothing here has been measured on a GPU yet (docs/TRAINING.md).
It covers the transformer only: its weights, gradients, AdamW state and activations. The VAE
(84 M parameters, frozen or LoRA on its encoder) adds its weights (0.2 GB in bf16) and the
activations of encoding the crop and decoding the output for the pixel loss, which this plan
does not count.

  fsdp_full   every transformer weight trains: float32 master weights, float32 gradients and
              two float32 AdamW moments, all sharded over the GPUs (16 bytes per parameter / N),
              plus the bf16 copies of the blocks being gathered (the current one and the
              prefetched next one) and their gradients before the reduce-scatter
  lora_ddp    the transformer frozen in bf16 on every GPU (2 bytes per parameter), LoRA
              adapters at 16 bytes per adapter parameter (float32 weight, gradient, two moments)
  lora_fsdp   as lora_ddp with the frozen bf16 weights sharded too (block gathering as fsdp_full)

Activations, bf16, per token of the joint sequence (image tokens (crop / token_px)^2 + prompt
tokens): without checkpointing each block keeps ~SAVED_VECTORS_PER_BLOCK width-wide vectors for
its backward. Counted for a double-stream block per token of its stream: the adaptive norm's
input, output and modulated output (3), q/k/v (3), the q/k RMS norms' inputs and outputs (4), the
rotated q/k (2), the attention output and its projection (2), the gated residual (2), the second
norm (3), the MLP's 4x-wide input and GELU output (8), its output and gated residual (3): 30; a
single-stream block comes to about the same (29), and the RMS norms' float32 upcasts add ~2;
with per-block checkpointing it keeps its input only, and one block at a time is recomputed.
Flash-style attention is assumed (no n^2 scores kept).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

GB = 1e9
STRATEGIES = ("fsdp_full", "lora_ddp", "lora_fsdp")
CROPS = (512, 1024, 2048)
DEVICES_GB = (80, 141)  # A100/H100 80 GB, H200 141 GB
SAVED_VECTORS_PER_BLOCK = 32
CONTEXT_BYTES = 0.5 * 2**30  # CUDA context, outside the allocator
WORKSPACE_BYTES = 0.25 * 2**30  # cuBLAS / NCCL workspaces
FRAGMENTATION = 0.05  # share of the device the caching allocator cannot hand out as one peak
BYTES_PER_TRAINED_PARAM = 16  # float32 weight + gradient + two AdamW moments


@dataclass(frozen=True)
class TransformerSizes:
    """What the training plan needs from a transformer, read off a meta build."""

    params: int
    block_params: int  # the largest block (a double-stream block)
    blocks: int
    width: int
    token_px: int
    prompt_tokens: int
    lora_params: int  # adapter parameters at rank `lora_rank` on the given targets
    lora_rank: int


def lora_param_count(transformer, rank: int, targets) -> int:
    """Adapter parameters LoRA of `rank` adds to the Linear layers whose name ends in a target
    (peft's matching: the whole name, or a suffix after a dot): rank * (in + out) each."""
    import torch.nn as nn

    total = 0
    for name, module in transformer.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            total += rank * (module.in_features + module.out_features)
    return total


@functools.lru_cache(maxsize=None)
def transformer_sizes(preset: str, lora_rank: int = 64, targets: tuple[str, ...] | None = None) -> TransformerSizes:
    """The sizes of a preset's transformer from a weightless build; LoRA at `lora_rank` on `targets`
    (default: train.lora_targets' default)."""
    from op4ksr.model import OP4KSR
    from op4ksr.training.config import DEFAULT_LORA_TARGETS

    model = OP4KSR.from_preset(preset, device="meta")
    t = model.transformer
    blocks = [*t.transformer_blocks, *t.single_transformer_blocks]
    return TransformerSizes(
        params=sum(p.numel() for p in t.parameters()),
        block_params=max(sum(p.numel() for p in b.parameters()) for b in blocks),
        blocks=len(blocks), width=t.config.num_attention_heads * t.config.attention_head_dim,
        token_px=model.token_period_px, prompt_tokens=model.prompt_embeds.shape[1],
        lora_params=lora_param_count(t, lora_rank, targets or DEFAULT_LORA_TARGETS), lora_rank=lora_rank)


def tokens(sizes: TransformerSizes, crop: int) -> int:
    """Joint sequence length of one crop: image tokens plus prompt tokens."""
    return (crop // sizes.token_px) ** 2 + sizes.prompt_tokens


def state_bytes(sizes: TransformerSizes, strategy: str, gpus: int) -> float:
    """Weights, gradients and optimiser state per GPU."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    gathered = 2 * sizes.block_params * 2 + 4 * sizes.block_params  # 2 bf16 blocks + one float32 grad
    lora = BYTES_PER_TRAINED_PARAM * sizes.lora_params
    if strategy == "fsdp_full":
        return BYTES_PER_TRAINED_PARAM * sizes.params / gpus + gathered
    if strategy == "lora_ddp":
        return 2 * sizes.params + lora
    return 2 * sizes.params / gpus + 2 * 2 * sizes.block_params + lora / gpus


def activation_bytes(sizes: TransformerSizes, crop: int, batch: int, checkpointing: bool) -> float:
    """Activations kept for the backward pass of `batch` crops (bf16)."""
    n = tokens(sizes, crop) * batch
    per_block = SAVED_VECTORS_PER_BLOCK * n * sizes.width * 2
    if checkpointing:  # block inputs (both streams: the joint sequence) + one block recomputed at a time
        return sizes.blocks * n * sizes.width * 2 + per_block
    return sizes.blocks * per_block


def peak_bytes(sizes: TransformerSizes, strategy: str, crop: int, checkpointing: bool, gpus: int = 8,
               batch: int = 1) -> float:
    """Per-GPU peak allocated bytes of a training step of the transformer."""
    return state_bytes(sizes, strategy, gpus) + activation_bytes(sizes, crop, batch, checkpointing) + WORKSPACE_BYTES


def usable_bytes(device_gb: float) -> float:
    """What a device of `device_gb` (decimal GB, as sold) can hold as one peak."""
    return device_gb * GB * (1 - FRAGMENTATION) - CONTEXT_BYTES


def training_table(preset: str = "flux-dev", gpus: int = 8, batch: int = 1, lora_rank: int = 64) -> list[dict]:
    """Rows {strategy, checkpointing, crop, tokens, peak_gb, fits_<N>gb} over STRATEGIES x CROPS."""
    sizes = transformer_sizes(preset, lora_rank)
    rows = []
    for strategy in STRATEGIES:
        for checkpointing in (False, True):
            for crop in CROPS:
                peak = peak_bytes(sizes, strategy, crop, checkpointing, gpus, batch)
                rows.append({"strategy": strategy, "checkpointing": checkpointing, "crop": crop,
                             "tokens": tokens(sizes, crop) * batch, "peak_gb": round(peak / GB, 1),
                             **{f"fits_{gb}gb": peak <= usable_bytes(gb) for gb in DEVICES_GB}})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows as the table in docs/TRAINING.md."""
    head = "| strategy | checkpointing | crop | tokens | per-GPU peak (GB) | " + \
        " | ".join(f"{gb} GB" for gb in DEVICES_GB) + " |"
    lines = [head, "|" + "---|" * (5 + len(DEVICES_GB))]
    for r in rows:
        fits = " | ".join("fits" if r[f"fits_{gb}gb"] else "no" for gb in DEVICES_GB)
        lines.append(f"| {r['strategy']} | {'yes' if r['checkpointing'] else 'no'} | {r['crop']} | {r['tokens']} | "
                     f"{r['peak_gb']} | {fits} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m op4ksr.training.memory [gpus] [batch]
    import json
    import sys

    gpus, batch = (int(a) for a in (sys.argv[1:] + ["8", "1"])[:2])
    sizes = transformer_sizes("flux-dev")
    print(json.dumps({"preset": "flux-dev", "gpus": gpus, "batch_per_gpu": batch, "sizes": sizes.__dict__}))
    print(markdown_table(training_table("flux-dev", gpus, batch)))
