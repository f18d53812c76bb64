"""Speed switches for one forward on a GPU: attention backend, regional compile, VAE layout, FP8.

Each switch is a function that changes a built model in place and returns what it did, so a
benchmark can record it; none of them changes what the model computes beyond rounding.
"""
from __future__ import annotations

import re
from typing import Callable

import torch
import torch.nn as nn

# diffusers attention backends worth trying, fastest first where they work (all are linear-memory
# except "_native_math"); "flash"/"_flash_3" need the flash-attn package, the *_hub ones a network.
ATTENTION_CANDIDATES = {
    "cuda": ("_native_cudnn", "_native_flash", "native"),
    "cpu": ("native",),
}
E4M3_MAX = 448.0  # largest finite float8_e4m3fn value
# every Linear inside the repeated blocks: the projections carry ~all FLOPs, and the AdaLN
# modulation linears (norm*.linear, one row per image) hold 27% of flux-dev's weights, so FP8
# halves their memory at no measurable time; the embedders and the output head stay in bf16
FP8_TARGET = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.\d+\.")


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


# --- FP8 --------------------------------------------------------------------------------------


def fp8_unavailable_reason(device: torch.device) -> str | None:
    """None when FP8 matmuls can run on `device`, else why not (one line)."""
    device = torch.device(device)
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return f"torch {torch.__version__} has no float8 matmul"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor}) has no FP8 tensor cores (needs sm_89+)"
    elif device.type != "cpu":
        return f"no FP8 path for device type {device.type!r}"
    return None


def fp8_targets(transformer: nn.Module) -> list[tuple[str, nn.Linear]]:
    """(name, layer) of the Linear layers that FP8 mode converts: the blocks' projections whose
    sides are multiples of 16 (what FP8 matmul kernels need)."""
    return [(name, m) for name, m in transformer.named_modules()
            if isinstance(m, nn.Linear) and FP8_TARGET.match(name)
            and m.in_features % 16 == 0 and m.out_features % 16 == 0]


class Float8Linear(nn.Module):
    """y = x W^T + b with W in float8 e4m3 (one scale per output row) and x quantised per row on
    the fly; the product runs on FP8 tensor cores through torch._scaled_mm, out in the input dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach()  # (out, in)
        scale = w.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12) / E4M3_MAX  # (out, 1)
        self.register_buffer("weight_fp8", (w.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn))
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (M, in)
        x_scale = rows.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12) / E4M3_MAX  # (M, 1)
        x_fp8 = (rows.float() / x_scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(x_fp8, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
                             out_dtype=x.dtype)  # (M, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def quantize_fp8(transformer: nn.Module, backend: str = "auto") -> dict:
    """Convert the transformer's block projections to FP8 in place; returns {backend, layers, note}.

    backend "torchao": torchao's Float8DynamicActivationFloat8WeightConfig (per-row scales);
    "native": Float8Linear above; "auto": torchao when importable, else native."""
    if backend not in ("auto", "torchao", "native"):
        raise ValueError(f"fp8 backend must be auto, torchao or native; got {backend!r}")
    targets = fp8_targets(transformer)
    if backend in ("auto", "torchao"):
        try:
            from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
        except ImportError as error:
            if backend == "torchao":
                raise RuntimeError(f"torchao float8 is not importable here: {error}") from error
        else:
            names = {name for name, _ in targets}
            quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
                      filter_fn=lambda module, fqn: fqn in names)
            return {"backend": "torchao", "layers": len(targets), "note": "per-row dynamic activation, per-row weight"}
    names = [name for name, _ in targets]
    del targets  # hold no reference: each bf16 layer is freed as soon as it is converted
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = transformer.get_submodule(parent_name)
        setattr(parent, child, Float8Linear(getattr(parent, child)))
    return {"backend": "native", "layers": len(names),
            "note": "op4ksr.inference.speed.Float8Linear: torch._scaled_mm, per-row dynamic activation, per-row weight"}
