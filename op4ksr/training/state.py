"""Training checkpoints: the model in the docs/ARCHITECTURE.md layout plus the state a stopped run resumes from.

```
<output_dir>/checkpoints/
  latest                         the name of the newest complete checkpoint
  step-0000500/
    model_index.json, vae/, transformer/, prompt_embeds.safetensors   (OP4KSR.from_pretrained)
    train_state/state.json       step, elapsed and CPU seconds, trainable names, optimiser param groups, config
    train_state/optimizer.safetensors, rng.safetensors, lora.safetensors (LoRA runs only)
```
Everything is safetensors or JSON (no pickle). A checkpoint is written under a temporary name
and renamed when complete, so a run killed mid-write resumes from the previous one.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from op4ksr.checkpoint import LATEST, STATE_DIR, CheckpointError, load_state_dict
from op4ksr.model import OP4KSR
from op4ksr.training.trainable import has_lora, inference_view, load_lora_state_dict, lora_state_dict



@dataclass
class TrainState:
    """What a resumed run restores besides the weights."""

    step: int
    elapsed_s: float
    cpu_s: float
    generator_state: torch.Tensor


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def _optimizer_tensors(optim_state: dict) -> dict[str, torch.Tensor]:
    """{"<parameter name>::<state key>": tensor} of a name-keyed optimiser state dict."""
    tensors = {}
    for name, per_param in optim_state["state"].items():
        for key, value in per_param.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{name}::{key}"] = t.detach().cpu().contiguous()
    return tensors


def _optimizer_state(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[str, dict] = {}
    for name, value in tensors.items():
        param, key = name.rsplit("::", 1)
        state.setdefault(param, {})[key] = value
    return {"state": state, "param_groups": groups}


def save_checkpoint(root: Path, step: int, model: OP4KSR, optim_state: dict, generator: torch.Generator,
                    trainable: list[str], elapsed_s: float, cpu_s: float, config: dict, keep: int) -> Path:
    """Write checkpoints/step-N (model + train state), point `latest` at it, prune to `keep`.

    `model` holds the weights to save (unsharded, adapters included); `optim_state` is the
    name-keyed optimiser state (op4ksr.training.distributed.gather_optimizer_state)."""
    ckpt_root = root / "checkpoints"
    final = ckpt_root / checkpoint_name(step)
    tmp = ckpt_root / (final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    inference_view(model).save_pretrained(tmp)
    state_dir = tmp / STATE_DIR
    state_dir.mkdir()
    save_file(_optimizer_tensors(optim_state), str(state_dir / "optimizer.safetensors"))
    save_file({"generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}, str(state_dir / "rng.safetensors"))
    if has_lora(model):
        save_file(lora_state_dict(model.state_dict()), str(state_dir / "lora.safetensors"))
    meta = {"step": step, "elapsed_s": elapsed_s, "cpu_s": cpu_s, "trainable": trainable,
            "param_groups": optim_state["param_groups"], "config": config}
    (state_dir / "state.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (ckpt_root / LATEST).write_text(final.name + "\n")
    for old in sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))[:-keep]:
        shutil.rmtree(old)
    return final


def load_weights(ckpt: Path, model: OP4KSR, transformer_lora: bool, vae_lora: bool) -> None:
    """Load a checkpoint into the (unsharded) model: the parts trained in full from their folders,
    the LoRA adapters from the train state (their frozen base weights stay the starting ones)."""
    if not vae_lora:
        model.vae.load_state_dict(load_state_dict(ckpt / "vae"))
    if not transformer_lora:
        model.transformer.load_state_dict(load_state_dict(ckpt / "transformer"))
    if transformer_lora or vae_lora:
        path = ckpt / STATE_DIR / "lora.safetensors"
        if not path.is_file():
            raise CheckpointError(f"{ckpt}: this is a LoRA run but {path.name} is missing from {STATE_DIR}/")
        load_lora_state_dict(model, load_file(str(path)))


def load_train_state(ckpt: Path, trainable: list[str]) -> tuple[TrainState, dict]:
    """The train state and the name-keyed optimiser state of a checkpoint; the trainable parameters
    must match by name."""
    state_dir = ckpt / STATE_DIR
    meta = json.loads((state_dir / "state.json").read_text())
    if meta["trainable"] != trainable:
        raise CheckpointError(f"{ckpt}: trained a different set of parameters ({len(meta['trainable'])} vs "
                              f"{len(trainable)}); resume with the same train.transformer / train.vae settings "
                              "or set train.resume=never")
    optim_state = _optimizer_state(load_file(str(state_dir / "optimizer.safetensors")), meta["param_groups"])
    rng = load_file(str(state_dir / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    state = TrainState(step=int(meta["step"]), elapsed_s=float(meta["elapsed_s"]),
                       cpu_s=float(meta.get("cpu_s", 0.0)), generator_state=rng["generator"])
    return state, optim_state
