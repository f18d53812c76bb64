"""Checkpoint I/O in the diffusers folder layout, safetensors only (docs/ARCHITECTURE.md).

Components are built on the meta device and their weights assigned from safetensors, so a
24 GB model is never materialised twice; every missing, unexpected or mis-shaped key is
reported by name instead of surfacing later as a confusing runtime error.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from op4ksr.errors import UserError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"
# a training run's checkpoints (op4ksr/training/state.py): <run>/checkpoints/{latest, step-N/train_state/}
STATE_DIR = "train_state"
LATEST = "latest"


class CheckpointError(UserError):
    """A checkpoint folder is incomplete or does not match the model it is loaded into."""


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of one component folder (one file, or the shards of an index)."""
    single, index = folder / WEIGHTS_NAME, folder / INDEX_NAME
    if single.is_file():
        return [single]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shard(s) listed in {INDEX_NAME} are missing: {', '.join(missing)}")
        return [folder / s for s in shards]
    pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
    hint = f" (found {', '.join(pickles)}: pickled weights are refused; convert them to safetensors)" if pickles else ""
    raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} or {INDEX_NAME}{hint}")


def read_config(folder: Path) -> dict:
    """config.json of a component folder as a dict of constructor arguments."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: config.json is missing")
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def load_state_dict(folder: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a component folder, read from safetensors onto `device`."""
    state = {}
    for path in weight_files(folder):
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    return state


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise CheckpointError naming every missing / unexpected key and every shape mismatch."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [(k, expected[k], tuple(state[k].shape)) for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if wrong:
        problems += [f"'{k}' has shape {got} in the checkpoint but the model expects {want}" for k, want, got in wrong]
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:5])}" + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:5])}" + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else ""))
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def meta_component(cls, config: dict, where: str) -> torch.nn.Module:
    """An instance of `cls` (a diffusers ModelMixin) built from its config on the meta device: shapes, no weights."""
    with torch.device("meta"):
        try:
            accepted = inspect.signature(cls.__init__).parameters
            return cls(**{k: v for k, v in config.items() if k in accepted and not k.startswith("_")})
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{where} does not describe a {cls.__name__}: {err}") from err


def load_component(cls, folder: Path, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """An instance of `cls` (a diffusers ModelMixin) from a folder with config.json + safetensors."""
    module = meta_component(cls, read_config(folder), f"{folder}/config.json")
    state = load_state_dict(folder, device)
    check_state_dict(module, state, str(folder))
    module.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    return module.eval()


def save_component(module, folder: Path) -> None:
    """config.json + safetensors for one diffusers component (one file; contiguous tensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    module.save_config(str(folder))
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


def files_sha256(paths: list[Path]) -> str:
    """sha256 over the bytes of `paths` in order: the identity of a set of weights."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint of a training run folder (root/checkpoints), or None."""
    pointer = root / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    path = root / "checkpoints" / pointer.read_text().strip()
    return path if (path / STATE_DIR / "state.json").is_file() else None
