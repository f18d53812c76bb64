"""int8 weight-only quantisation of the transformer's block projections, one scale per output channel.

W ~ scale[:, None] * q with q = round(W / scale) in [-127, 127] and scale = max|W_row| / 127. The
activations stay in the model's dtype; each call dequantises the one layer's weight for its
product (a transient copy of one layer, never of the model) and runs the dense matmul. Measured
on this project's CPU (Xeon with AMX, torch 2.13, (4608 x 3072) @ (3072 x 12288) in bf16):
dequantise + matmul 0.36 TFLOP/s, bf16 0.47, torch._weight_int8pack_mm (the CPU kernel torchao's
int8 weight-only config ends in) 0.03; so int8 saves memory and bytes read, not time. torchao is
not used: its int8 weight-only path adds a dependency for the same arithmetic.

Checkpoints store q as `<layer>.weight` (I8) beside `<layer>.weight_scale` (F32), written by
`op4ksr import --weights int8`, so an actor does not quantise 12 B parameters at every start.
The layers converted are the ones FP8 mode converts (fp8_targets, below): every
Linear inside a transformer block; embedders, the output projection and the VAE stay as they are.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from op4ksr.errors import UserError

BLOCK_LINEAR = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.\d+\.")
E4M3_MAX = 448.0  # largest finite float8_e4m3fn value
# every Linear inside the repeated blocks: the projections carry ~all FLOPs, and the AdaLN
# modulation linears (norm*.linear, one row per image) hold 27% of flux-dev's weights, so FP8
# halves their memory at no measurable time; the embedders and the output head stay in bf16
FP8_TARGET = BLOCK_LINEAR
WEIGHT_MODES = ("dtype", "fp8", "int8")  # model.weights: the model's dtype, FP8 (Hopper), int8 weight-only
SCALE_SUFFIX = "weight_scale"


class WeightsModeError(UserError):
    """model.weights does not fit the checkpoint or the device; the message names the key."""


def int8_targets(transformer: nn.Module) -> list[tuple[str, nn.Linear]]:
    """(name, layer) of the Linear layers int8 mode converts: every Linear inside a block."""
    return [(name, m) for name, m in transformer.named_modules()
            if isinstance(m, nn.Linear) and BLOCK_LINEAR.match(name)]


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in), scale float32 (out,)) of a weight (out, in), symmetric per output channel."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """y = x (scale * q)^T + b with q int8 per output channel; x and y in the model's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer(SCALE_SUFFIX, torch.empty(out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    dtype=linear.weight.dtype, device=linear.weight.device)
        if linear.weight.device.type != "meta":
            q, scale = quantize_int8(linear.weight)
            layer.weight, layer.weight_scale = q, scale
            if linear.bias is not None:
                layer.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_scale.to(x.dtype)[:, None]  # this layer only, for this product
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per output channel"


def convert_int8(transformer: nn.Module) -> int:
    """Replace the block Linears by Int8Linear in place (quantising real weights; meta stays meta); layers converted."""
    names = [name for name, _ in int8_targets(transformer)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = transformer.get_submodule(parent_name)
        setattr(parent, child, Int8Linear.from_linear(getattr(parent, child)))
    return len(names)


def is_int8_target(key: str, shape: tuple[int, ...]) -> bool:
    """Whether a transformer state-dict key is a weight int8 mode stores as int8 (a block Linear's weight).

    Every 2-D `.weight` inside a block is a Linear's (the blocks' norms have 1-D weights)."""
    return bool(BLOCK_LINEAR.match(key)) and key.endswith(".weight") and len(shape) == 2


def stored_weights_mode(transformer_keys: dict[str, torch.dtype]) -> str:
    """The weights mode a checkpoint's transformer is stored in, from its tensors' dtypes: int8 | fp8 | dtype."""
    dtypes = set(transformer_keys.values())
    if torch.int8 in dtypes:
        return "int8"
    if any(d in dtypes for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None))):
        return "fp8"
    return "dtype"


def int8_unavailable_reason(device: torch.device) -> str | None:
    """None when int8 weight-only runs on `device` (dequantising needs only a dense matmul), else why not."""
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        return f"no int8 weight-only path for device type {device.type!r}"
    return None


def check_weights_mode(weights: str, offload: str, found: str, where: str) -> None:
    """WeightsModeError (one line, naming the key) when `weights` cannot run a checkpoint stored in
    mode `found` (dtype | fp8 | int8: stored_weights_mode, or model_index.json's "weights")."""
    if weights not in WEIGHT_MODES:
        raise WeightsModeError(f"model.weights={weights!r}: choose one of {', '.join(WEIGHT_MODES)}")
    if offload not in ("none", "blocks"):
        raise WeightsModeError(f"model.offload={offload!r}: choose none or blocks")
    if found == "fp8" and weights != "fp8":
        raise WeightsModeError(f"model.weights={weights}: {where} is stored in fp8, which cannot be requantised; "
                               "import the bf16 weights with `op4ksr import --weights int8`")
    if found == "int8" and weights != "int8":
        raise WeightsModeError(f"model.weights={weights}: {where} is stored in int8; set model.weights=int8")
    if weights == "fp8" and offload == "blocks":
        raise WeightsModeError("model.weights=fp8 with model.offload=blocks is not supported; "
                               "use model.weights=int8 to stream smaller blocks")


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
            "note": "op4ksr.quantize.Float8Linear: torch._scaled_mm, per-row dynamic activation, per-row weight"}
