"""`train(cfg)`: the training loop. It knows nothing of Ray: a launcher (pipeline/training/launch.py under
Ray Train) sets up the process group, and passes hooks for the batches it streams and for
publishing checkpoints. Data parallelism (DDP or FSDP) comes from op4ksr.training.distributed."""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from op4ksr.loading import InferenceOptions, ModelSpec, load_model
from op4ksr.model import OP4KSR
from op4ksr.training.config import TrainConfig
from op4ksr.training import distributed
from op4ksr.training.data import HRImages, sample_batch
from op4ksr.checkpoint import latest_checkpoint
from op4ksr.training.state import load_train_state, load_weights, save_checkpoint
from op4ksr.training.trainable import add_lora, set_trainable, zero_init_proj_out

METRICS_FILE = "metrics.jsonl"


Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor, dict]]


@dataclass
class TrainHooks:
    """How a launcher plugs into the loop. Every rank calls `on_checkpoint` at the same steps (rank 0
    with the checkpoint folder, the others with None), so it may be a collective such as ray.train.report."""

    on_checkpoint: Callable[[int, Path | None, dict], None] = lambda step, path, metrics: None
    resume_from: Path | None = None  # overrides cfg.resume (e.g. a checkpoint downloaded from object storage)
    # this rank's batch for a 0-based step: (x_hr, x_lr, counters such as skipped inputs); None: cfg.data read here
    batches: Batches | None = None
    on_step: Callable[[int, int], None] = lambda step, rank: None  # after each finished step (step, rank)


@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None
    metrics: list[dict] = field(default_factory=list)


class Objective(nn.Module):
    """The module a step differentiates (and DDP wraps): HR/LR batch -> prediction of x_hr."""

    def __init__(self, model: OP4KSR, objective: str):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x_hr: torch.Tensor, x_lr: torch.Tensor) -> torch.Tensor:
        if self.objective == "autoencoder":
            return self.model.decode(self.model.encode(x_hr))
        return self.model(x_lr, tuple(x_hr.shape[-2:]))


def build_model(cfg: TrainConfig, device: torch.device | str) -> OP4KSR:
    """The starting model through the one loader (op4ksr.loading): cfg.init_path (a checkpoint, a run
    folder: its latest checkpoint, a shipped name), else the preset's seeded random weights; RFR from cfg."""
    spec = ModelSpec(source=cfg.init_path or cfg.preset, seed=cfg.preset_seed, device=str(device),
                     options=InferenceOptions(rfr_mode=cfg.rfr_mode, rfr_scale=cfg.rfr_scale))
    return load_model(spec)


def pixel_loss(x: torch.Tensor, y: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    if kind == "charbonnier":
        return torch.sqrt((x - y).pow(2) + eps**2).mean()
    return F.l1_loss(x, y)


def loss_terms(x_sr: torch.Tensor, x_hr: torch.Tensor, cfg: TrainConfig, period: int) -> dict[str, torch.Tensor]:
    """{'loss', 'l_pix', 'l_ap'}: pixel loss + lambda_ap * L_AP on the error map (docs/PERIODICITY.md)."""
    l_pix = pixel_loss(x_sr, x_hr, cfg.pixel_loss, cfg.charbonnier_eps)
    l_ap = torch.zeros((), device=x_sr.device)
    if cfg.lambda_ap > 0 and cfg.objective == "sr":
        from op4ksr.quality.periodicity import ap_loss

        l_ap = ap_loss(x_sr.float(), x_hr.float(), period)
    return {"loss": l_pix + cfg.lambda_ap * l_ap, "l_pix": l_pix, "l_ap": l_ap}


def lr_factor(step: int, cfg: TrainConfig, budget_used: float = 0.0) -> float:
    """Multiplier of cfg.lr at 0-based `step`: linear warmup, then constant or cosine to 0.

    The cosine follows whichever runs out first, the steps or the CPU budget (`budget_used` is
    its spent fraction); with a CPU budget the schedule, and so the run, depends on the speed."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        progress = max((step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps), budget_used)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def _stop_everywhere(stop: bool, device: torch.device) -> bool:
    """True on every rank if any rank wants to stop (the time budget is per rank)."""
    if not distributed.is_distributed():
        return stop
    flag = torch.tensor(float(stop), device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def _mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """The global batch's loss terms: each rank's mean, averaged over ranks (equal batch sizes)."""
    stacked = torch.stack([v.detach().float() for v in values.values()])
    if distributed.is_distributed():
        torch.distributed.all_reduce(stacked, op=torch.distributed.ReduceOp.SUM)
        stacked /= torch.distributed.get_world_size()
    return {k: float(v) for k, v in zip(values, stacked.cpu())}


def _sum_over_ranks(counters: dict, device: torch.device) -> dict:
    """Counters (e.g. skipped inputs) of the whole run: the same keys on every rank, summed."""
    if not counters or not distributed.is_distributed():
        return counters
    totals = torch.tensor([float(v) for v in counters.values()], device=device)
    torch.distributed.all_reduce(totals, op=torch.distributed.ReduceOp.SUM)
    return {k: int(v) for k, v in zip(counters, totals.tolist())}


def _resume_point(cfg: TrainConfig, hooks: TrainHooks) -> Path | None:
    if hooks.resume_from is not None:
        return Path(hooks.resume_from)
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        return latest_checkpoint(Path(cfg.output_dir))
    return Path(cfg.resume)


@dataclass
class _Run:
    """The live state of a run: what a checkpoint saves and a resume restores."""

    model: OP4KSR
    objective: nn.Module  # the module a step differentiates, wrapped for DDP / FSDP
    skeleton: OP4KSR | None  # rank 0 of a sharded run: the unsharded layout a checkpoint is saved from
    names: list[str]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    elapsed_s: float = 0.0
    cpu_before: float = 0.0  # CPU seconds of earlier sessions


def _build(cfg: TrainConfig, device: torch.device, resume: Path | None) -> tuple[OP4KSR, list[str]]:
    """The unwrapped model with adapters, restored weights and trainable flags; the trainable names."""
    model = build_model(cfg, device)
    if resume is None and cfg.zero_init_proj_out:
        zero_init_proj_out(model)
    add_lora(model, cfg)
    if resume is not None:
        load_weights(resume, model, transformer_lora=cfg.transformer == "lora" and cfg.objective == "sr",
                     vae_lora=cfg.vae == "encoder_lora")
    names = [n for n, _ in set_trainable(model, cfg)]
    if cfg.amp == "bf16":  # frozen weights are never updated: no float32 master copy needed
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    if cfg.gradient_checkpointing:  # diffusers' per-block activation checkpointing
        model.transformer.enable_gradient_checkpointing()
        model.vae.enable_gradient_checkpointing()
    return model, names


def _prepare(cfg: TrainConfig, device: torch.device, hooks: TrainHooks) -> _Run:
    """The model, wrapped objective, optimiser and data RNG: fresh, or restored from a checkpoint.
    The optimiser is built after wrapping: FSDP replaces the parameters with sharded ones."""
    resume = _resume_point(cfg, hooks)
    rank, _ = distributed.world()
    model, names = _build(cfg, device, resume)
    skeleton = distributed.meta_skeleton(model) if distributed.is_distributed() and rank == 0 else None
    objective = distributed.wrap(Objective(model, cfg.objective).train(), cfg.strategy, device, cfg.amp == "bf16")
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # the same seed on every rank: each draws the global batch and keeps its slice (see _local_batches)
    run = _Run(model, objective, skeleton, names, params, optimizer, torch.Generator().manual_seed(cfg.seed * 1000))
    if resume is not None:
        state, optim_state = load_train_state(resume, names)
        distributed.restore_optimizer_state(objective, optimizer, optim_state)
        run.generator.set_state(state.generator_state)
        run.step, run.elapsed_s, run.cpu_before = state.step, state.elapsed_s, state.cpu_s
        if rank == 0:
            print(f"resuming from {resume} at step {run.step} of {cfg.steps}", flush=True)
    return run


def _local_batches(cfg: TrainConfig, run: _Run) -> Batches:
    """Batches drawn here from cfg.data. Every rank draws the whole global batch with the shared
    generator and keeps its own slice, so the run sees the same data at any number of workers."""
    images = HRImages(cfg.data, cfg.crop, cache=cfg.cache_images)
    rank, world = distributed.world()

    def next_batch(step: int):
        x_hr, x_lr = sample_batch(images, cfg.batch_size * world, cfg.crop, cfg.degrade, run.generator, cfg.augment)
        mine = slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)
        return x_hr[mine], x_lr[mine], {}

    return next_batch


def _save(cfg: TrainConfig, run: _Run, out: Path, cpu_used: float) -> Path | None:
    """Write a checkpoint from rank 0; a collective under FSDP (every rank gathers its shards)."""
    optim_state = distributed.gather_optimizer_state(run.objective, run.optimizer)
    view = run.model
    if distributed.is_distributed():
        state = distributed.gather_model_state(run.objective)
        if run.skeleton is None:
            return None
        run.skeleton.load_state_dict({k.removeprefix("model."): v for k, v in state.items()}, assign=True)
        view = run.skeleton
    return save_checkpoint(out, run.step, view, optim_state, run.generator, run.names, run.elapsed_s, cpu_used,
                           cfg.as_dict(), cfg.keep_checkpoints)


def _log(out: Path, row: dict, cfg: TrainConfig) -> None:
    with open(out / METRICS_FILE, "a") as f:
        f.write(json.dumps(row) + "\n")
    if row["step"] % cfg.log_every == 0 or row["step"] == 1:
        print(f"step {row['step']}/{cfg.steps} loss {row['loss']:.4f} l_pix {row['l_pix']:.4f} "
              f"l_ap {row['l_ap']:.4f} lr {row['lr']:.2e} {row['step_s']:.2f}s/step", flush=True)


def _step(cfg: TrainConfig, run: _Run, x_hr: torch.Tensor, x_lr: torch.Tensor, period: int, lr: float):
    """One optimiser step; (loss terms averaged over ranks, gradient norm before clipping)."""
    device = x_hr.device
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else contextlib.nullcontext()
    with amp:
        x_sr = run.objective(x_hr, x_lr)
    terms = loss_terms(x_sr.float(), x_hr, cfg, period)
    run.optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor over the shards
        grad_norm = grad_norm.full_tensor()
    run.optimizer.step()
    return _mean_over_ranks(terms), float(grad_norm)


def train(cfg: TrainConfig, device: torch.device | str = "cpu", hooks: TrainHooks | None = None) -> TrainResult:
    """Train per cfg, resuming from the latest checkpoint when there is one; returns the last step,
    the last checkpoint and this session's per-step metrics (also appended to metrics.jsonl)."""
    hooks = hooks or TrainHooks()
    device, out = torch.device(device), Path(cfg.output_dir)
    rank, world = distributed.world()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    run = _prepare(cfg, device, hooks)
    next_batch = hooks.batches or _local_batches(cfg, run)
    period = cfg.ap_period or run.model.token_period_px
    session, last_ckpt = [], None
    started, cpu_started = time.monotonic(), time.process_time()
    while run.step < cfg.steps:
        t0 = time.monotonic()
        x_hr, x_lr, counters = next_batch(run.step)
        cpu_used = run.cpu_before + time.process_time() - cpu_started
        lr = cfg.lr * lr_factor(run.step, cfg, cpu_used / (60 * cfg.max_cpu_minutes) if cfg.max_cpu_minutes else 0.0)
        terms, grad_norm = _step(cfg, run, x_hr.to(device), x_lr.to(device), period, lr)
        run.step += 1
        dt = time.monotonic() - t0
        run.elapsed_s += dt
        cpu_used = run.cpu_before + time.process_time() - cpu_started
        row = {"step": run.step, **terms, "grad_norm": grad_norm, "lr": lr, "step_s": round(dt, 4),
               "images_per_s": round(cfg.batch_size * world / dt, 3), "elapsed_s": round(run.elapsed_s, 2),
               "cpu_s": round(cpu_used, 2), **_sum_over_ranks(counters, device)}
        session.append(row)
        if rank == 0:
            _log(out, row, cfg)
        out_of_time = (cfg.max_minutes is not None and time.monotonic() - started > 60 * cfg.max_minutes) or \
            (cfg.max_cpu_minutes is not None and cpu_used > 60 * cfg.max_cpu_minutes)
        stop = _stop_everywhere(out_of_time, device)
        if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps or stop:
            path = _save(cfg, run, out, cpu_used)
            last_ckpt = path or last_ckpt
            hooks.on_checkpoint(run.step, path, row)
        hooks.on_step(run.step, rank)
        if stop:
            break
    if last_ckpt is None and rank == 0:
        last_ckpt = latest_checkpoint(out)
    return TrainResult(step=run.step, checkpoint=last_ckpt, metrics=session)
