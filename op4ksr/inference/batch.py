"""Running the model on decoded image files: the output-size limit of a device, batches."""
from __future__ import annotations

from typing import Callable

import torch

from op4ksr.images.codec import DecodedImage, finish_output
from op4ksr.imageops import bicubic_resize
from op4ksr.loading import resolve_device
from op4ksr.model import OP4KSR
from op4ksr.presets import PRESETS
from op4ksr.sizing import OutputSizeError


CPU_MAX_OUTPUT_MEGAPIXELS = 40.0  # sr.max_output_megapixels: auto on a CPU (the fixed default before auto)


def max_output_megapixels(
    value: float | str,
    *,
    preset: str = "",
    read_json: Callable[[str], dict] | None = None,
    dtype: str = "bfloat16",
    device: str = "auto",
    device_memory_gb: float | None = None,
    decode_partitions: int = 0,
    attention_backend: str = "",
    weights: str = "dtype",
    offload: str = "none",
    host_memory_bytes: float | None = None,
) -> float:
    """sr.max_output_megapixels as a number: a number as is; "auto" is the largest output that the
    memory plan (op4ksr.inference.memory_plan) fits on the GPU (`device_memory_gb`, else `device`'s memory),
    and CPU_MAX_OUTPUT_MEGAPIXELS when the model runs on a CPU. The plan is for the checkpoint that
    `read_json` reads (op4ksr.loading.checkpoint_reader: its configs, no weights), else for `preset`.
    `weights` (dtype | fp8 | int8) and `offload` (none | blocks) are planned for; with offload=blocks
    the host must hold the blocks (`host_memory_bytes`, default this machine's available memory)."""
    if value != "auto":
        return float(value)
    from op4ksr.inference.memory_plan import GIB, checkpoint_plan, load_plan

    if device_memory_gb is None:
        torch_device = resolve_device(device)
        if torch_device.type != "cuda":
            return CPU_MAX_OUTPUT_MEGAPIXELS
        device_memory_gb = torch.cuda.get_device_properties(torch_device).total_memory / GIB
    attention = "math" if attention_backend == "_native_math" else "flash"
    mode = weights if weights in ("fp8", "int8") else dtype
    kwargs = dict(partitions=decode_partitions, attention=attention, offload=offload)
    if read_json is not None:
        plan, name = checkpoint_plan(read_json, mode, **kwargs), "the model"
    elif preset in PRESETS:
        plan, name = load_plan(preset, mode, **kwargs), preset
    else:
        raise ValueError(f"sr.max_output_megapixels=auto needs a checkpoint or a model preset ({', '.join(PRESETS)}), "
                         f"got {preset!r}; set a number instead")
    check_host_memory(plan, name, host_memory_bytes)
    limit = plan.max_output_megapixels(float(device_memory_gb))
    if limit <= 0:
        streamed = " with model.offload=blocks" if offload == "blocks" else ""
        raise OutputSizeError(f"{name} in {mode} does not fit a {float(device_memory_gb):g} GB GPU{streamed} "
                              f"({plan.source}); use a GPU with more memory"
                              + ("" if streamed else " or model.offload=blocks"))
    return limit


class HostMemoryError(OutputSizeError):
    """The host cannot hold what the memory plan puts there (offload=blocks: the blocks)."""


def available_host_bytes() -> float:
    """MemAvailable of this machine (Linux), else its physical memory."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return float(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        import os

        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_host_memory(plan, name: str, host_memory_bytes: float | None = None) -> None:
    """HostMemoryError, with the plan's figures, when the host cannot hold what the plan keeps there."""
    need = plan.host_bytes()
    if need <= 0:
        return
    have = available_host_bytes() if host_memory_bytes is None else float(host_memory_bytes)
    if need > have:
        raise HostMemoryError(f"{name} in {plan.mode} with model.offload={plan.offload} keeps {need / 1e9:.1f} GB of "
                              f"blocks in host memory, and {have / 1e9:.1f} GB is available; use a machine with more "
                              "memory, model.weights=int8 (half the bytes), or model.offload=none")


def upscale_batch(model: OP4KSR, images: list[DecodedImage], size: tuple[int, int]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(rgb (3, H, W), alpha (1, H, W) | None) on the CPU for each image; all inputs share one size."""
    x = torch.stack([im.rgb for im in images])  # (B, 3, h, w)
    out = model.upscale(x, size).cpu()  # (B, 3, H, W)
    results = []
    for image, rgb in zip(images, out):
        alpha = None if image.alpha is None else bicubic_resize(image.alpha[None], size)[0].clamp(0, 1)
        results.append((finish_output(rgb, alpha), alpha))
    return results
