"""Peak device memory of one forward against output size, and the largest output a device holds.

peak(H, W) = weights + max over stages (VAE encode, transformer, VAE decode) of the stage's live
activations at P = output pixels padded to the token multiple. The analytic estimate counts live
tensors per stage (the comments below say which); it is labelled "analytic" and is what the plan
uses until the full-size benchmark (bench/gpu_4k.py) has measured peaks. Given that benchmark's
JSON, each stage's estimate is rescaled to the measured peaks (`calibrate`) and the plan says
"calibrated" and from what file and device.

Facts the counts rest on (flux-dev, bf16, 4096x4096, P = 16.8 MP):
  weights     11.9 G parameters: 23.8 GB in bf16, 15.2 GB in FP8 mode (8.6 G in one byte)
  transformer 16,896 tokens x 3072 wide: ~14 live d-vectors per token, 1.5 GB; attention in
              "math" mode adds heads x n^2 scores (27 GB), flash/cuDNN/efficient kernels add none
  VAE decode  the last stage runs at P/4 with 256 -> 128 channels and its output conv upsamples
              128 channels to full size: ~400 bytes per output pixel, 6.7 GB
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from op4ksr.presets import PRESETS

GIB = 2**30
STAGES = ("vae_encode", "transformer", "vae_decode")
MODES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 2, "int8": 2}  # mode -> activation bytes
OFFLOAD = ("none", "blocks")  # model.offload (op4ksr.offload): blocks streamed, two on the device at a time
MODE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
IO_BYTES_PER_PX = 12  # x_up, float32 RGB, alive for the whole forward
LIVE_TOKEN_VECTORS = 14  # per token in a block: stream, norm, q/k/v, attention out, 4d MLP (+ act)
# vae._whole_stats sums float64 moments (16 bytes per element: value and square) one band of rows
# at a time, so like the strips they cost a fraction of the tensor, not the whole of it
MOMENT_BYTES = 16
WORKSPACE_BYTES = GIB // 4  # cuBLAS/cuDNN workspaces taken through the caching allocator
CONTEXT_BYTES = GIB // 2  # the CUDA context, outside the allocator: device memory no tensor gets
FRAGMENTATION = 0.05  # share of the device the caching allocator cannot hand out as one peak
# <preset>.json: a bench/gpu_4k.py output (shipped as package data, pyproject's assets/**)
MEASUREMENTS_DIR = Path(__file__).resolve().parents[1] / "assets" / "memory"


@dataclass(frozen=True)
class Architecture:
    """The sizes the memory plan needs, read off a built model (any device, meta included)."""

    width: int  # transformer hidden size
    heads: int
    prompt_tokens: int
    token_px: int  # output px per token side
    latent_px: int  # output px per latent cell side (the VAE factor)
    input_stride: int
    vae_channels: tuple[int, ...]  # block_out_channels
    out_channels: int
    params: int
    fp8_params: int  # parameters FP8 mode stores in one byte
    # per block in forward order: (parameters, int8 mode's one-byte weights, their output channels)
    blocks: tuple[tuple[int, int, int], ...] = ()
    largest_linear: int = 0  # the widest block Linear's weight: int8 mode dequantises one at a time

    @classmethod
    def of_model(cls, model) -> "Architecture":
        import torch

        from op4ksr.model import PACK
        from op4ksr.inference.speed import fp8_targets
        from op4ksr.offload import transformer_blocks
        from op4ksr.quantize import int8_targets

        t, v = model.transformer.config, model.vae.config
        blocks = []
        for _, block in transformer_blocks(model.transformer):
            linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
            blocks.append((sum(p.numel() for p in block.parameters()), sum(m.weight.numel() for m in linears),
                           sum(m.out_features for m in linears)))
        linears = [m.weight.numel() for _, m in int8_targets(model.transformer)]
        return cls(t.num_attention_heads * t.attention_head_dim, t.num_attention_heads, model.prompt_embeds.shape[1],
                   model.vae_factor * PACK, model.vae_factor, v.input_stride, tuple(v.block_out_channels),
                   v.out_channels, sum(p.numel() for p in model.parameters()),
                   sum(m.weight.numel() for _, m in fp8_targets(model.transformer)), tuple(blocks), max(linears, default=0))


@functools.lru_cache(maxsize=None)
def preset_architecture(preset: str) -> Architecture:
    """The Architecture of a preset, from a weightless (meta) build."""
    from op4ksr.model import OP4KSR

    return Architecture.of_model(OP4KSR.from_preset(preset, device="meta"))


# FLUX's longest T5 prompt: the prompt length that a checkpoint's configs do not give (it is the
# shape of prompt_embeds.safetensors), so a plan from configs counts this many, an upper bound
PROMPT_TOKENS_BOUND = 512


def checkpoint_architecture(read_json: Callable[[str], dict]) -> Architecture:
    """The Architecture of a checkpoint from its component configs alone (`read_json(relative path)`,
    no weights read): both components built on the meta device, the prompt PROMPT_TOKENS_BOUND long."""
    import torch

    from op4ksr.checkpoint import meta_component
    from op4ksr.model import OP4KSR
    from op4ksr.transformer import RFRFluxTransformer2DModel
    from op4ksr.vae import F16AutoencoderKL

    vae = meta_component(F16AutoencoderKL, read_json("vae/config.json"), "vae/config.json")
    transformer = meta_component(RFRFluxTransformer2DModel, read_json("transformer/config.json"),
                                 "transformer/config.json")
    with torch.device("meta"):
        prompt = torch.empty(1, PROMPT_TOKENS_BOUND, transformer.config.joint_attention_dim)
        pooled = torch.empty(1, transformer.config.pooled_projection_dim)
    return Architecture.of_model(OP4KSR(vae, transformer, prompt, pooled))


def weights_bytes(arch: Architecture, mode: str) -> float:
    """Bytes of the parameters in `mode` (fp8: block linears in one byte, the rest in bf16; int8: block
    linears in one byte with a bf16 scale per output channel, the rest in bf16)."""
    if mode == "fp8":
        return arch.fp8_params + 2 * (arch.params - arch.fp8_params)
    if mode == "int8":
        linear, channels = sum(b[1] for b in arch.blocks), sum(b[2] for b in arch.blocks)
        return linear + 2 * channels + 2 * (arch.params - linear)
    return MODES[mode] * arch.params


def block_bytes(arch: Architecture, mode: str) -> list[float]:
    """Bytes of each transformer block in `mode` (fp8 and int8: its Linears' weights in one byte)."""
    if mode in ("fp8", "int8"):
        return [w + 2 * (p - w) + (2 * c if mode == "int8" else 0) for p, w, c in arch.blocks]
    return [MODES[mode] * p for p, _, _ in arch.blocks]


def padded_pixels(arch: Architecture, height: int, width: int) -> int:
    """Output pixels after padding each side to the token multiple."""
    pad = lambda n: -(-n // arch.token_px) * arch.token_px  # noqa: E731
    return pad(height) * pad(width)


def stage_activation_bytes(arch: Architecture, pixels: float, mode: str, attention: str = "flash",
                           partitions: int = 0) -> dict[str, float]:
    """{stage: peak live activation bytes} of one forward at `pixels` padded output pixels."""
    if attention not in ("flash", "math"):
        raise ValueError(f"attention must be 'flash' (linear memory) or 'math' (quadratic), got {attention!r}")
    b, s2 = MODES[mode], arch.input_stride**2
    quadratic = attention == "math"
    # VAE mid-block attention: one head over the latent grid, ch[-1] wide
    lat = pixels / arch.latent_px**2
    vae_attn = 4 * lat * arch.vae_channels[-1] * b + (2 * lat * lat * b if quadratic else 0)
    # encode: the input in model dtype and 2x-1, then conv_in's output, its norm and its SiLU at P/s^2
    encode = (6 * b + 3 * arch.vae_channels[0] / s2 * b) * pixels
    # transformer: image + prompt tokens; math attention keeps a score and a softmax per head
    n = pixels / arch.token_px**2 + arch.prompt_tokens
    transformer = LIVE_TOKEN_VECTORS * n * arch.width * b + (2 * arch.heads * n * n * b if quadratic else 0)
    if mode == "fp8":  # Float8Linear's float32 and fp8 row copies of the widest input (single block: 5d)
        transformer += n * 5 * arch.width * 5
    if mode == "int8":  # the widest Linear dequantised for its product: the converted copy and the scaled one
        transformer += 2 * arch.largest_linear * b
    return {"vae_encode": IO_BYTES_PER_PX * pixels + max(encode, vae_attn),
            "transformer": IO_BYTES_PER_PX * pixels + transformer,
            "vae_decode": IO_BYTES_PER_PX * pixels + max(_decode_bytes_per_px(arch, b, partitions) * pixels, vae_attn)}


def _decode_bytes_per_px(arch: Architecture, b: int, partitions: int) -> float:
    ch = arch.vae_channels[::-1]  # decoder order
    s2 = arch.input_stride**2
    e_in, e_out = ch[-2] / s2, ch[-1] / s2  # elements per output px entering / leaving the last stage
    upsampler = (2 * e_in + e_in / 4) * b  # into the last stage: the nearest-upsampled copy, conv out, conv in
    finish = 3 * b + 2 * 3 * 4  # decoder output and two float32 temporaries of the [0, 1] mapping
    if partitions > 1:  # whole input and output, float64 moments, strip temporaries (float32 norms)
        first_resnet = (e_in + e_out) * b + (MOMENT_BYTES * e_in + 3 * e_in * b + 8 * e_in) / partitions
        head = (e_out + arch.out_channels) * b + (MOMENT_BYTES * e_out + 8 * e_out + ch[-1] * b) / partitions
    else:  # first resnet: input, its norm, its SiLU; head: SiLU, the full-size upsampled copy, output
        first_resnet = 3 * e_in * b
        head = (e_out + ch[-1] + arch.out_channels) * b
    return max(upsampler, first_resnet, head, finish)


@dataclass(frozen=True)
class MemoryPlan:
    """Peak memory of `preset` in `mode` against output size, analytic or calibrated."""

    preset: str
    mode: str = "bfloat16"
    attention: str = "flash"
    partitions: int = 0
    weights: float | None = None  # measured weight bytes (None: counted from the architecture)
    architecture: Architecture | None = None  # a checkpoint's (checkpoint_plan); None: the preset's
    scale: dict = field(default_factory=lambda: {s: (1.0, WORKSPACE_BYTES) for s in STAGES})  # stage -> (a, c)
    source: str = "analytic estimate (no measured peaks): op4ksr/inference/memory_plan.py"
    offload: str = "none"  # blocks: the device holds the resident weights and two streamed blocks

    def __post_init__(self):
        object.__setattr__(self, "mode", MODE_ALIASES.get(self.mode, self.mode))
        if self.mode not in MODES:
            raise ValueError(f"memory plan mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.offload not in OFFLOAD:
            raise ValueError(f"memory plan offload must be one of {', '.join(OFFLOAD)}, got {self.offload!r}")

    @property
    def arch(self) -> Architecture:
        return self.architecture or preset_architecture(self.preset)

    def weights_bytes(self) -> float:
        """Weight bytes on the device at the transformer's peak (offload: resident + two streamed blocks)."""
        if self.offload == "blocks":
            return self.resident_weights_bytes() + self.streamed_bytes()
        return self.weights if self.weights is not None else weights_bytes(self.arch, self.mode)

    def resident_weights_bytes(self) -> float:
        """Weight bytes on the device for the whole run (offload: all but the blocks)."""
        if self.offload == "blocks":
            return weights_bytes(self.arch, self.mode) - sum(block_bytes(self.arch, self.mode))
        return self.weights_bytes()

    def streamed_bytes(self) -> float:
        """Block bytes on the device during the transformer with offload: the running block and the next."""
        sizes = sorted(block_bytes(self.arch, self.mode)) if self.offload == "blocks" else []
        return sum(sizes[-2:])

    def host_bytes(self) -> float:
        """Host memory the blocks wait in while a GPU runs (offload=blocks: all of them, pinned); 0 otherwise.
        On a CPU the host is the device: its need is cpu_stage_bytes."""
        return sum(block_bytes(self.arch, self.mode)) if self.offload == "blocks" else 0.0

    def _stage_weights(self, stage: str) -> float:
        return self.weights_bytes() if stage == "transformer" else self.resident_weights_bytes()

    def stage_bytes(self, height: int, width: int) -> dict[str, float]:
        """{stage: weights + that stage's peak activations} in bytes at a (height, width) output."""
        raw = stage_activation_bytes(self.arch, padded_pixels(self.arch, height, width), self.mode,
                                     self.attention, self.partitions)
        return {s: self._stage_weights(s) + self.scale[s][0] * raw[s] + self.scale[s][1] for s in STAGES}

    def cpu_stage_bytes(self, height: int, width: int) -> dict[str, float]:
        """stage_bytes on a CPU: tensors only, no GPU workspaces or allocator slack (bench/full_size_cpu.py
        compares it with the RSS a CPU forward adds to the process)."""
        raw = stage_activation_bytes(self.arch, padded_pixels(self.arch, height, width), self.mode,
                                     self.attention, self.partitions)
        return {s: self._stage_weights(s) + raw[s] for s in STAGES}

    def peak_bytes(self, height: int, width: int) -> float:
        """Peak allocated bytes of one whole forward at a (height, width) output."""
        return max(self.stage_bytes(height, width).values())

    def max_output_megapixels(self, device_gb: float) -> float:
        """Largest square output (megapixels) whose peak fits a device of `device_gb` GiB; 0 if none."""
        usable = device_gb * GIB * (1 - FRAGMENTATION) - CONTEXT_BYTES
        step = self.arch.token_px
        if self.peak_bytes(step, step) > usable:
            return 0.0
        lo, hi = 1, 2
        while self.peak_bytes(hi * step, hi * step) <= usable and hi < 2**16:
            lo, hi = hi, hi * 2
        while hi - lo > 1:  # peak grows with size: bisect on the side in tokens
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.peak_bytes(mid * step, mid * step) <= usable else (lo, mid)
        return (lo * step) ** 2 / 1e6


def calibrate(plan: MemoryPlan, bench: dict | str | Path) -> MemoryPlan:
    """`plan` rescaled to the peaks measured by bench/gpu_4k.py (its JSON, or a path to it): per
    stage, measured = a * estimate + c by least squares over the matching sizes (one size: c = 0).
    Returns `plan` unchanged when the file has no matching measurement."""
    name = str(bench) if not isinstance(bench, dict) else "bench JSON"
    data = bench if isinstance(bench, dict) else json.loads(Path(bench).read_text())
    if data.get("preset") != plan.preset:
        return plan
    rows = [r for r in data.get("results", []) if MODE_ALIASES.get(r.get("mode"), r.get("mode")) == plan.mode
            and r.get("stages")]
    if not rows:
        return plan
    weights = float(rows[0]["weights_bytes"])
    scale = dict(plan.scale)
    for stage in STAGES:
        pts = [(r, _measured_peak(r, stage, plan.partitions)) for r in rows]
        pts = [(r, m) for r, m in pts if m]
        if pts:
            est = [stage_activation_bytes(plan.arch, padded_pixels(plan.arch, r["height"], r["width"]), plan.mode,
                                          plan.attention, plan.partitions)[stage] for r, _ in pts]
            scale[stage] = _fit(est, [m - weights for _, m in pts])
    device = data.get("device", {}).get("name", "unknown device")
    return replace(plan, weights=weights, scale=scale,
                   source=f"calibrated: {name} ({device}, {len(rows)} {plan.mode} sizes)")


def _measured_peak(row: dict, stage: str, partitions: int) -> float | None:
    """The row's measured peak for `stage` at the plan's decode partitions (the bench times a
    partitioned decode as a variant at its largest size)."""
    if stage == "vae_decode" and int(row.get("decode_partitions", 0)) != partitions:
        variant = row.get("vae_decode_variants", {}).get(f"partitioned_{partitions}", {})
        return variant.get("peak_memory_bytes")
    return row["stages"].get(stage, {}).get("peak_memory_bytes")


def _fit(estimates: list[float], measured: list[float]) -> tuple[float, float]:
    """(a, c) with measured ~ a * estimate + c, a > 0, c >= 0; through the origin for one point."""
    n = len(estimates)
    if n > 1:
        mx, my = sum(estimates) / n, sum(measured) / n
        var = sum((x - mx) ** 2 for x in estimates)
        if var > 0:
            a = sum((x - mx) * (y - my) for x, y in zip(estimates, measured)) / var
            c = my - a * mx
            if a > 0 and c >= 0:
                return a, c
    return max(sum(measured), 1.0) / sum(estimates), 0.0


def load_plan(preset: str, mode: str = "bfloat16", *, partitions: int = 0, attention: str = "flash",
              measurements: str | Path | None = None, offload: str = "none") -> MemoryPlan:
    """The plan for `preset`: calibrated from `measurements` or MEASUREMENTS_DIR/<preset>.json when
    that exists, else the analytic estimate."""
    plan = MemoryPlan(preset, mode, attention, int(partitions), offload=offload)
    path = Path(measurements) if measurements else MEASUREMENTS_DIR / f"{preset}.json"
    return calibrate(plan, path) if path.is_file() else plan


def checkpoint_plan(read_json: Callable[[str], dict], mode: str = "bfloat16", *, partitions: int = 0,
                    attention: str = "flash", offload: str = "none") -> MemoryPlan:
    """The plan for the checkpoint `read_json` reads, from its configs: a preset's (calibrated when
    measured) when the checkpoint has that preset's sizes, else the analytic estimate of its own."""
    arch = checkpoint_architecture(read_json)
    for preset in PRESETS:
        if replace(arch, prompt_tokens=PROMPT_TOKENS_BOUND) == replace(preset_architecture(preset),
                                                                     prompt_tokens=PROMPT_TOKENS_BOUND):
            return load_plan(preset, mode, partitions=partitions, attention=attention, offload=offload)
    return MemoryPlan("checkpoint", mode, attention, int(partitions), architecture=arch, offload=offload)


def plan_table(preset: str, modes: tuple[str, ...] = ("bfloat16", "fp8"), devices_gb: tuple[float, ...] = (24, 48, 80),
               **kwargs) -> dict:
    """{mode: {"source", "max_output_megapixels": {gb: MP}, "peak_gb_4096x4096"}} for a report."""
    out = {}
    for mode in modes:
        plan = load_plan(preset, mode, **kwargs)
        out[mode] = {"source": plan.source,
                     "max_output_megapixels": {str(gb): round(plan.max_output_megapixels(gb), 1) for gb in devices_gb},
                     "peak_gb_4096x4096": round(plan.peak_bytes(4096, 4096) / 1e9, 2)}
    return out


def measure_cpu_peak_bytes(fn) -> tuple[int, object]:
    """(peak bytes allocated on the CPU while fn() ran, above what was allocated before; fn's result).

    Reads the allocation events of torch's profiler, so it counts tensors, not the allocator's
    caching or the process's RSS; deterministic for a given program."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        if str(event.device_type()).endswith("CPU"):  # torch._C._autograd.DeviceType.CPU
            live += event.nbytes()
            peak = max(peak, live)
    return peak, result
