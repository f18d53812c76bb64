"""LoRA adapters read from the formats published for Flux SR models, as weight deltas to merge.

Known formats (every one a safetensors file; anything else is refused naming these):
  * diffusers: `pytorch_lora_weights.safetensors` (or any .safetensors) as written by
    `FluxPipeline.save_lora_weights`: keys `transformer.<module>.lora_A.weight` / `lora_B.weight`,
    the LoRA config (r, lora_alpha, patterns) in the file's `lora_adapter_metadata` as
    `transformer.<field>`; without it alpha = rank (diffusers' own convention: scale 1).
  * peft: a folder with `adapter_config.json` + `adapter_model.safetensors`, keys
    `base_model.model.<module>.lora_A.weight`, as `PeftModel.save_pretrained` writes; it applies
    to the transformer.
  * omgsr: a folder with peft adapters in `flux_adapter/` (the transformer) and
    `vae_encoder_adapter/` (the VAE encoder), as OMGSR's train/train_omgsr_f.py saves them
    (`PeftModel.save_pretrained` of the transformer and of `vae.encoder`, adapter names
    "flux_adapter" and "vae_encoder_adapter"; infer/omgsr_f_infer_model.py loads them back).

A delta is scale * B @ A (Linear) or the 1x1-then-kxk product for a Conv2d, scale =
alpha / r (alpha / sqrt(r) with use_rslora), as peft's LoraLayer.get_delta_weight computes it.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from op4ksr.errors import UserError
from op4ksr.tensorfile import read_header, read_tensor

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
PEFT_CONFIG, PEFT_FILE = "adapter_config.json", "adapter_model.safetensors"
OMGSR_ADAPTERS = {"flux_adapter": "transformer", "vae_encoder_adapter": "vae.encoder"}
KNOWN_FORMATS = (f"diffusers ({DIFFUSERS_FILE}, keys transformer.*.lora_A/lora_B.weight), "
                 f"peft (a folder with {PEFT_CONFIG} + {PEFT_FILE}), "
                 f"omgsr (a folder with {', '.join(f'{a}/' for a in OMGSR_ADAPTERS)})")
PEFT_PREFIX = "base_model.model."


class LoraError(UserError):
    """A LoRA adapter that cannot be merged: unknown format, or it does not match the base model."""


@dataclass
class LoraAdapter:
    """The LoRA pairs of one adapter on one component: module name -> (A, B, scale)."""

    source: str
    format: str
    target: str  # "transformer" | "vae.encoder"
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)

    def describe(self) -> dict:
        """What the checkpoint's `source` section records about this adapter."""
        ranks = sorted({a.shape[0] for a, _, _ in self.pairs.values()})
        scales = sorted({s for _, _, s in self.pairs.values()})
        return {"path": self.source, "format": self.format, "target": self.target, "modules": len(self.pairs),
                "ranks": ranks, "scales": scales}


def read_lora(path: Path, label: str | None = None) -> list[LoraAdapter]:
    """The adapters stored at `path` (a file or folder in a known format); LoraError naming the known ones."""
    label = label or str(path)
    if path.name == PEFT_FILE and (path.parent / PEFT_CONFIG).is_file():
        path = path.parent  # a peft adapter's weights file: its config is beside it
    if path.is_dir():
        if any((path / name / PEFT_CONFIG).is_file() for name in OMGSR_ADAPTERS):
            return [_read_peft(path / name, label, "omgsr", target)
                    for name, target in OMGSR_ADAPTERS.items() if (path / name / PEFT_CONFIG).is_file()]
        if (path / PEFT_CONFIG).is_file():
            return [_read_peft(path, label, "peft", "transformer")]
        if (path / DIFFUSERS_FILE).is_file():
            path = path / DIFFUSERS_FILE
        else:
            raise LoraError(f"LoRA {label}: no adapter found in the folder; known formats: {KNOWN_FORMATS}")
    if path.suffix != ".safetensors" or not path.is_file():
        raise LoraError(f"LoRA {label}: not a .safetensors file (pickled weights are refused); known formats: {KNOWN_FORMATS}")
    return _read_diffusers(path, label)


def _read_diffusers(path: Path, label: str) -> list[LoraAdapter]:
    tensors, metadata = read_header(path)
    config = json.loads(metadata.get("lora_adapter_metadata") or "{}")
    by_target: dict[str, dict[str, dict]] = {}
    for key in tensors:
        component, _, rest = key.partition(".")
        if component != "transformer" or not _is_lora_key(rest):
            raise LoraError(f"LoRA {label}: key {key!r} is not a diffusers Flux transformer LoRA key "
                            f"(text-encoder and kohya-style LoRAs are not supported); known formats: {KNOWN_FORMATS}")
        by_target.setdefault(component, {})[rest] = tensors[key]
    prefixed = {k.partition(".")[2]: v for k, v in config.items() if k.startswith("transformer.")}
    return [LoraAdapter(label, "diffusers", "transformer", _pairs(infos, prefixed or None, label))
            for infos in by_target.values()]


def _read_peft(folder: Path, label: str, fmt: str, target: str) -> LoraAdapter:
    config = json.loads((folder / PEFT_CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise LoraError(f"LoRA {label}: {folder / PEFT_CONFIG} is not a plain LoRA (peft_type "
                        f"{config.get('peft_type')}, use_dora {config.get('use_dora')}); only LoRA merges")
    if not (folder / PEFT_FILE).is_file():
        raise LoraError(f"LoRA {label}: {folder / PEFT_FILE} is missing (pickled adapter_model.bin is refused)")
    tensors, _ = read_header(folder / PEFT_FILE)
    infos = {}
    for key, info in tensors.items():
        if not key.startswith(PEFT_PREFIX) or not _is_lora_key(key[len(PEFT_PREFIX):]):
            raise LoraError(f"LoRA {label}: key {key!r} in {folder / PEFT_FILE} is not a peft LoRA key; "
                            f"known formats: {KNOWN_FORMATS}")
        infos[key[len(PEFT_PREFIX):]] = info
    return LoraAdapter(label, fmt, target, _pairs(infos, config, label))


def _is_lora_key(key: str) -> bool:
    return key.endswith(".lora_A.weight") or key.endswith(".lora_B.weight")


def _pairs(infos: dict, config: dict | None, label: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """module -> (A, B, scale) from `<module>.lora_A.weight` / `.lora_B.weight` tensors and a peft config."""
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in infos})
    pairs = {}
    for module in modules:
        a_info, b_info = infos.get(f"{module}.lora_A.weight"), infos.get(f"{module}.lora_B.weight")
        if a_info is None or b_info is None:
            raise LoraError(f"LoRA {label}: module {module} has only one of lora_A / lora_B")
        a, b = read_tensor(a_info), read_tensor(b_info)
        rank = a.shape[0]
        if b.shape[1] != rank:
            raise LoraError(f"LoRA {label}: module {module} has lora_A rank {rank} but lora_B {tuple(b.shape)}")
        pairs[module] = (a, b, _scale(module, rank, config, label))
    return pairs


def _scale(module: str, rank: int, config: dict | None, label: str) -> float:
    if not config:
        return 1.0  # no alpha stored: alpha = rank
    r = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r", rank))
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", r))
    if r != rank:
        raise LoraError(f"LoRA {label}: module {module} has rank {rank} but its config says r={r}")
    return alpha / (math.sqrt(r) if config.get("use_rslora") else r)


def _pattern_value(patterns: dict, module: str, default):
    # peft's rule: a pattern matches a module name that is it or ends in "." + it (regex allowed)
    for pattern, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?(?:{pattern})", module):
            return value
    return default


def merged_deltas(adapters: list[LoraAdapter], shapes: dict[str, tuple[int, ...]], target: str,
                  component: str) -> dict[str, list[tuple[torch.Tensor, torch.Tensor, float]]]:
    """weight key of the component -> the LoRA pairs to add to it, checked against the base weights' shapes.

    `target` is the adapter target this component takes ("transformer" or "vae.encoder"); keys in
    `shapes` are the component's own (the VAE's "encoder.<module>.weight" for the encoder)."""
    prefix = "encoder." if target == "vae.encoder" else ""
    deltas: dict[str, list] = {}
    for adapter in (a for a in adapters if a.target == target):
        for module, (a, b, scale) in adapter.pairs.items():
            key = f"{prefix}{module}.weight"
            if key not in shapes:
                raise LoraError(f"LoRA {adapter.source}: module {module!r} is not in the base {component} "
                                f"(no weight {key}); is this LoRA for another model?")
            want = tuple(shapes[key])
            got = (b.shape[0], a.shape[1], *a.shape[2:])
            if got != want:
                raise LoraError(f"LoRA {adapter.source}: module {module!r} gives a {got} update but the base "
                                f"{component} weight {key} is {want}; is this LoRA for another model size?")
            deltas.setdefault(key, []).append((a, b, scale))
    return deltas


def apply_deltas(weight: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """weight + sum of scale * B @ A, in float32 (the caller rounds once, to the target dtype)."""
    merged = weight.float()
    for a, b, scale in pairs:
        # Linear: A (r, in), B (out, r). Conv2d: A (r, in, k, k), B (out, r, 1, 1) -> (out, in, k, k)
        delta = torch.einsum("or,r...->o...", b.float().flatten(1), a.float())
        merged = merged + scale * delta
    return merged
