"""One model component (transformer or VAE) copied from a public folder into our layout, a tensor at a time.

The component is built on the meta device from the public config (our class, key for key the
public one), its state-dict keys and shapes are checked against the source's safetensors
headers before any data is read, and then each tensor is read, converted to the target dtype,
merged with its LoRA updates and written, in source order. Peak memory is one tensor and its
converted copy, never the model (FLUX.1-dev: 24 GB of bf16 weights).
"""
from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import torch

from op4ksr.checkpoint import WEIGHTS_NAME, CheckpointError, check_state_dict, weight_files
from op4ksr.importing.lora import apply_deltas
from op4ksr.tensorfile import read_tensor, source_tensors, write_streaming
from op4ksr.quantize import SCALE_SUFFIX, is_int8_target, quantize_int8


def read_public_config(folder: Path, expected_class: str) -> dict:
    """config.json of a public diffusers component folder (with its `_` keys), checked for its class."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: config.json is missing; give a diffusers {expected_class} folder")
    config = json.loads(path.read_text())
    found = config.get("_class_name")
    if found not in (None, expected_class):
        raise CheckpointError(f"{path}: _class_name is {found!r}, expected {expected_class!r}")
    return config


def meta_component(cls, config: dict):
    """An instance of `cls` on the meta device for the constructor arguments in `config` (others ignored)."""
    accepted = inspect.signature(cls.__init__).parameters
    with torch.device("meta"):
        try:
            return cls(**{k: v for k, v in config.items() if k in accepted and not k.startswith("_")})
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"config does not describe a {cls.__name__}: {err}") from err


def copy_component(module, source: Path, out: Path, dtype: torch.dtype,
                   deltas: dict[str, list] | None = None, int8: bool = False) -> int:
    """Write `module`'s config and the source folder's weights (in `dtype`, LoRA merged) to `out`; bytes written.

    `module` is a meta-device instance that fixes the expected keys and shapes. `int8`: the block
    Linears' weights are stored int8 with a float32 scale per output channel (op4ksr.quantize),
    quantised after the LoRA merge."""
    tensors = source_tensors(source)
    check_state_dict(module, tensors, str(source))  # TensorInfo has .shape: no data read yet
    deltas = deltas or {}
    plan = []
    for key, info in tensors.items():
        if int8 and is_int8_target(key, info.shape):
            plan += [(key, info.shape, torch.int8), (key.removesuffix("weight") + SCALE_SUFFIX, info.shape[:1], torch.float32)]
        else:
            plan.append((key, info.shape, dtype if info.dtype.is_floating_point else info.dtype))
    quantised: dict[str, torch.Tensor] = {}  # the scale of the int8 weight just written

    def converted(key: str) -> torch.Tensor:
        if key in quantised:
            return quantised.pop(key)
        tensor = read_tensor(tensors[key])
        if not tensor.is_floating_point():
            return tensor
        tensor = apply_deltas(tensor, deltas[key]) if key in deltas else tensor
        if int8 and is_int8_target(key, tuple(tensor.shape)):
            q, scale = quantize_int8(tensor)
            quantised[key.removesuffix("weight") + SCALE_SUFFIX] = scale
            return q
        return tensor.to(dtype)

    out.mkdir(parents=True, exist_ok=True)
    module.save_config(str(out))
    write_streaming(out / WEIGHTS_NAME, plan, converted, metadata={"format": "pt"})
    return sum(torch.empty((), dtype=d).element_size() * math.prod(s) for _, s, d in plan)
