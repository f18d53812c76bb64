"""Data parallelism for the training loop: DDP, or FSDP (PyTorch's `fully_shard`) with one unit per
transformer block; and the checkpoint collectives (full state gathered to rank 0, restored sharded).

Torch only: the launcher (pipeline/training/launch.py under Ray Train) initialises the process group;
without one, the loop runs on one process and nothing here wraps anything.
"""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn as nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without a process group."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def transformer_blocks(model) -> list[nn.Module]:
    """The FSDP units and checkpointing granularity: the double- and single-stream blocks."""
    t = model.transformer
    return [*t.transformer_blocks, *t.single_transformer_blocks]


def wrap(objective: nn.Module, strategy: str, device: torch.device, bf16: bool) -> nn.Module:
    """`objective` ready for data-parallel steps: unchanged on one process, else DDP or FSDP.

    FSDP shards parameters, gradients and optimiser state: each block is one unit (gathered for its
    forward and backward, resharded after), the rest of the model (VAE, embedders, norms) is the
    root unit. With bf16 the gathered parameters are bf16 for compute while the sharded parameters
    the optimiser updates stay float32, and gradients are reduced in float32."""
    if not is_distributed():
        return objective
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    for block in transformer_blocks(objective.model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(objective, mesh=mesh, mp_policy=policy)
    return objective


def meta_skeleton(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parameters are on the meta device (no memory) and whose buffers are
    real copies: built before sharding, it takes a gathered state dict with assign=True."""
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in module.parameters()}
    return copy.deepcopy(module, memo)


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def gather_model_state(objective: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of the wrapped objective on rank 0's CPU, {} elsewhere.
    A collective under FSDP: every rank calls it at the same point. Keys as in the unwrapped module."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    if not is_distributed():
        return {k: v.detach().cpu() for k, v in objective.state_dict().items()}
    return get_model_state_dict(objective, options=_options(cpu_offload=True))


def gather_optimizer_state(objective: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser state keyed by parameter name ({"state": {name: {...}}, "param_groups": [...]}),
    full tensors on rank 0's CPU. A collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(objective, optimizer, options=_options(cpu_offload=True))


def restore_optimizer_state(objective: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full, name-keyed optimiser state (every rank passes the whole of it); under FSDP each
    rank keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(objective, optimizer, state, options=_options())
