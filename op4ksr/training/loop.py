"""`train(cfg)`: the training loop. It knows nothing of Ray; a launcher passes hooks for DDP
wrapping and for reporting checkpoints (jobs/train.py wires Ray Train in)."""
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
from op4ksr.training.data import HRImages, sample_batch
from op4ksr.training.state import latest_checkpoint, load_train_state, load_weights, save_checkpoint
from op4ksr.training.trainable import add_lora, set_trainable, zero_init_proj_out

METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainHooks:
    """How a launcher plugs into the loop. Every rank calls `on_checkpoint` at the same steps (rank 0
    with the checkpoint folder, the others with None), so it may be a collective such as ray.train.report."""

    rank: int = 0
    world_size: int = 1
    wrap_model: Callable[[nn.Module], nn.Module] = lambda m: m
    on_checkpoint: Callable[[int, Path | None, dict], None] = lambda step, path, metrics: None
    resume_from: Path | None = None  # overrides cfg.resume (e.g. the checkpoint Ray restored)


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
    """{'loss', 'l_pix', 'l_ap'}: pixel loss + lambda_ap * L_AP on the error map (DESIGN.md §3)."""
    l_pix = pixel_loss(x_sr, x_hr, cfg.pixel_loss, cfg.charbonnier_eps)
    l_ap = torch.zeros((), device=x_sr.device)
    if cfg.lambda_ap > 0 and cfg.objective == "sr":
        from op4ksr.periodicity import ap_loss

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
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return stop
    flag = torch.tensor(float(stop), device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


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
    names: list[str]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    elapsed_s: float = 0.0
    cpu_before: float = 0.0  # CPU seconds of earlier sessions


def _prepare(cfg: TrainConfig, device: torch.device, hooks: TrainHooks) -> _Run:
    """The model, trainable parameters, optimiser and data RNG: fresh, or restored from a checkpoint."""
    resume = _resume_point(cfg, hooks)
    lora = cfg.transformer == "lora" and cfg.objective == "sr"
    model = build_model(cfg, device)
    if resume is None and cfg.zero_init_proj_out:
        zero_init_proj_out(model)
    if lora:
        add_lora(model, cfg)
    if resume is not None:
        load_weights(resume, model, lora=lora)
    named = set_trainable(model, cfg)
    params, names = [p for _, p in named], [n for n, _ in named]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = _Run(model, names, params, optimizer, torch.Generator().manual_seed(cfg.seed * 1000 + hooks.rank))
    if resume is not None:
        state = load_train_state(resume, optimizer, names)
        run.generator.set_state(state.generator_state)
        run.step, run.elapsed_s, run.cpu_before = state.step, state.elapsed_s, state.cpu_s
    return run


def _log(out: Path, row: dict, cfg: TrainConfig) -> None:
    with open(out / METRICS_FILE, "a") as f:
        f.write(json.dumps(row) + "\n")
    if row["step"] % cfg.log_every == 0 or row["step"] == 1:
        print(f"step {row['step']}/{cfg.steps} loss {row['loss']:.4f} l_pix {row['l_pix']:.4f} "
              f"l_ap {row['l_ap']:.4f} lr {row['lr']:.2e} {row['step_s']:.2f}s/step", flush=True)


def train(cfg: TrainConfig, device: torch.device | str = "cpu", hooks: TrainHooks | None = None) -> TrainResult:
    """Train per cfg, resuming from the latest checkpoint when there is one; returns the last step,
    the last checkpoint and this session's per-step metrics (also appended to metrics.jsonl)."""
    hooks = hooks or TrainHooks()
    device, out, main = torch.device(device), Path(cfg.output_dir), hooks.rank == 0
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    run = _prepare(cfg, device, hooks)
    images = HRImages(cfg.data, cfg.crop, cache=cfg.cache_images)
    objective = hooks.wrap_model(Objective(run.model, cfg.objective).train())
    period = cfg.ap_period or run.model.token_period_px
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else contextlib.nullcontext()
    session, last_ckpt = [], None
    started, cpu_started = time.monotonic(), time.process_time()
    while run.step < cfg.steps:
        t0 = time.monotonic()
        x_hr, x_lr = sample_batch(images, cfg.batch_size, cfg.crop, cfg.degrade, run.generator, cfg.augment)
        x_hr, x_lr = x_hr.to(device), x_lr.to(device)
        with amp:
            x_sr = objective(x_hr, x_lr)
        terms = loss_terms(x_sr.float(), x_hr, cfg, period)
        run.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        cpu_used = run.cpu_before + time.process_time() - cpu_started
        lr = cfg.lr * lr_factor(run.step, cfg, cpu_used / (60 * cfg.max_cpu_minutes) if cfg.max_cpu_minutes else 0.0)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        run.optimizer.step()
        run.step += 1
        dt = time.monotonic() - t0
        run.elapsed_s += dt
        cpu_used = run.cpu_before + time.process_time() - cpu_started
        row = {"step": run.step, **{k: float(v.detach()) for k, v in terms.items()}, "grad_norm": float(grad_norm),
               "lr": lr, "step_s": round(dt, 4), "images_per_s": round(cfg.batch_size * hooks.world_size / dt, 3),
               "elapsed_s": round(run.elapsed_s, 2), "cpu_s": round(cpu_used, 2)}
        session.append(row)
        if main:
            _log(out, row, cfg)
        out_of_time = (cfg.max_minutes is not None and time.monotonic() - started > 60 * cfg.max_minutes) or \
            (cfg.max_cpu_minutes is not None and cpu_used > 60 * cfg.max_cpu_minutes)
        stop = _stop_everywhere(out_of_time, device)
        if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps or stop:
            path = None
            if main:
                path = last_ckpt = save_checkpoint(out, run.step, run.model, run.optimizer, run.generator, run.names,
                                                   run.elapsed_s, cpu_used, cfg.as_dict(), cfg.keep_checkpoints)
            hooks.on_checkpoint(run.step, path, row)
        if stop:
            break
    if last_ckpt is None and main:
        last_ckpt = latest_checkpoint(out)
    return TrainResult(step=run.step, checkpoint=last_ckpt, metrics=session)
