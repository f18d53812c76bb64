"""Checks of values that pass their key's rule (jobs/config_rules.py) but cannot work, made before
anything is listed, started or written: each one names the key and what to do.

- model.device names a device the machine that runs the model has (this one, unless the actors
  ask for GPUs of their own: actors.num_gpus > 0);
- actors.warmup_shapes are [H, W] output shapes that the size policy (sr.*) allows.
"""
from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf

from jobs.config import ConfigError


def check_device(cfg: DictConfig, remote_gpus: bool) -> None:
    """ConfigError when model.device asks for a device the machine that loads the model lacks.

    `remote_gpus`: the model runs in actors that reserve GPUs of their own (actors.num_gpus > 0), on
    nodes this driver cannot see; then only `cpu` is refused (those GPUs would be reserved and idle)."""
    device = str(cfg.model.device)
    if device == "auto":
        return
    if remote_gpus:
        if device == "cpu":
            raise ConfigError(f"model.device=cpu with actors.num_gpus={cfg.actors.num_gpus}: each actor would hold "
                              "a GPU and leave it idle; set model.device=auto (or cuda), or actors.num_gpus=0")
        return
    import torch

    where = "this machine"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            have = f"{count} CUDA GPU(s)" if count else "no CUDA GPU"
            raise ConfigError(f"model.device={device}: {where} has {have}; set model.device=auto or cpu, or run the "
                              "model on GPU nodes (actors.num_gpus=1)")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"model.device=mps: {where} has no MPS device; set model.device=auto or cpu")


def check_warmup_shapes(cfg: DictConfig, size) -> None:
    """ConfigError for an actors.warmup_shapes entry that is not [H, W] of whole numbers the size
    policy `size` (a SizePolicy) allows: each side at least sr.min_output_side, H*W within
    sr.max_output_megapixels."""
    shapes = cfg.actors.warmup_shapes
    for i, shape in enumerate(shapes):
        shape = OmegaConf.to_container(shape) if isinstance(shape, ListConfig) else shape
        where = f"actors.warmup_shapes[{i}]={shape!r}"
        if not (isinstance(shape, list) and len(shape) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in shape)):
            raise ConfigError(f"{where}: give an output shape [H, W] of two whole numbers, e.g. [[2048, 2048]]")
        height, width = shape
        if min(height, width) < size.min_side:
            raise ConfigError(f"{where}: each side must be at least sr.min_output_side={size.min_side} (outputs "
                              "smaller than that are refused, so warming up at it proves nothing)")
        if height * width > size.max_megapixels * 1_000_000:
            raise ConfigError(f"{where}: {height * width / 1e6:.1f} MP is over sr.max_output_megapixels="
                              f"{size.max_megapixels:g}; give a shape the size policy allows")

