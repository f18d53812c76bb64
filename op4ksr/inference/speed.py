"""Speed switches for one forward on a GPU: attention backend, regional compile, VAE layout, FP8.

Each switch is a function that changes a built model in place and returns what it did, so a
benchmark can record it; none of them changes what the model computes beyond rounding.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

# diffusers attention backends worth trying, fastest first where they work (all are linear-memory
# except "_native_math"); "flash"/"_flash_3" need the flash-attn package, the *_hub ones a network.
ATTENTION_CANDIDATES = {
    "cuda": ("_native_cudnn", "_native_flash", "native"),
    "cpu": ("native",),
}


def attention_candidates(device: torch.device, requested: str = "auto") -> tuple[str, ...]:
    """Backends to try on `device`: the requested one alone, or the device's list for "auto"."""
    if requested != "auto":
        return (requested,)
    return ATTENTION_CANDIDATES.get(torch.device(device).type, ("native",))


def pick_attention_backend(transformer, candidates: tuple[str, ...], measure: Callable[[], float]) -> tuple[str, dict]:
    """(fastest backend that runs, {backend: seconds or "error: ..."}); set on the transformer.

    `measure` runs and times a forward with whatever backend is set. Falls back to "native"
    (diffusers' default SDPA dispatch) when no candidate runs."""
    trials: dict[str, float | str] = {}
    for name in candidates:
        try:
            transformer.set_attention_backend(name)
            trials[name] = float(measure())
        except Exception as error:  # a backend missing on this device/build: try the next one
            trials[name] = f"error: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    timed = {k: v for k, v in trials.items() if isinstance(v, float)}
    best = min(timed, key=timed.get) if timed else "native"
    transformer.set_attention_backend(best)
    return best, trials


def compile_blocks(transformer, *, dynamic: bool | None = True, mode: str | None = None, fullgraph: bool = True) -> int:
    """Number of transformer blocks compiled one by one (regional compilation: one graph per block
    class, reused by every block, so compile time does not grow with depth)."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
    transformer.compile_repeated_blocks(fullgraph=fullgraph, dynamic=dynamic, mode=mode)
    return sum(1 for m in transformer.modules() if getattr(m, "_compiled_call_impl", None) is not None)


def uncompile_blocks(transformer) -> None:
    """Undo compile_blocks: every block runs eagerly again."""
    for module in transformer.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None


def vae_channels_last(vae: nn.Module) -> None:
    """Store the VAE's conv weights NHWC, the layout cuDNN's fastest convolutions use."""
    vae.to(memory_format=torch.channels_last)


# FP8 lives with int8 in op4ksr/quantize.py (model.weights); the bench and the memory plan find it here too
from op4ksr.quantize import E4M3_MAX, FP8_TARGET, Float8Linear, fp8_targets, fp8_unavailable_reason, quantize_fp8  # noqa: E402,F401
