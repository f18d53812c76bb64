"""`op4ksr train`: fine-tune OP4KSR with Ray Train (TorchTrainer) around op4ksr.training.train."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from jobs.common import add_config_arguments, config_from_args
from jobs.config import to_yaml

DESCRIPTION = """\
Train OP4KSR on HR images: random crops degraded on the fly (degrade.*), loss = L1 or
Charbonnier + loss.lambda_ap * L_AP, the transformer fully or with LoRA (train.transformer),
optionally the VAE decoder (train.vae). Runs under Ray Train's TorchTrainer with train.workers
workers (DDP when more than one); --no-ray runs the same loop in this process.

Checkpoints go to <train.output_dir>/checkpoints/step-N in the model layout (load them with
--model in upscale/eval) plus the train state; rerunning the same command resumes from the
latest one (train.resume=never starts over). Per-step metrics: <train.output_dir>/metrics.jsonl.

examples:
  op4ksr train --config configs/train-tiny.yaml
  op4ksr train --config configs/train-tiny.yaml train.steps=200 train.output_dir=runs/t1 loss.lambda_ap=0
  op4ksr train --config my-archive.yaml train.data=/scans/hr train.transformer=lora train.workers=4 train.use_gpu=true
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr train", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--no-ray", action="store_true", help="run the training loop in this process (one worker)")
    return parser


def _worker_loop(loop_config: dict) -> None:
    """Ray Train's train_loop_per_worker: the library loop with Ray's rank, DDP and reporting."""
    import ray.train
    import ray.train.torch

    from op4ksr.training import TrainConfig, TrainHooks, train

    ctx = ray.train.get_context()
    world = ctx.get_world_size()

    def on_checkpoint(step, path, metrics):
        # metrics only: the checkpoint already sits in train.output_dir, and a restarted worker resumes
        # from there (copying multi-GB checkpoints into Ray's storage as well would double the writes)
        ray.train.report({**metrics, "checkpoint": str(path) if path else ""})

    hooks = TrainHooks(rank=ctx.get_world_rank(), world_size=world, on_checkpoint=on_checkpoint,
                       wrap_model=(lambda m: ray.train.torch.prepare_model(m)) if world > 1 else (lambda m: m))
    train(TrainConfig.from_dict(loop_config["train"]), device=ray.train.torch.get_device(), hooks=hooks)


def _absolute(train_cfg):
    """Paths made absolute: Ray Train runs workers in their own working directory."""
    def fix(p: str) -> str:
        return str(Path(p).resolve()) if p and not p.startswith("offline:") else p

    resume = train_cfg.resume if train_cfg.resume in ("auto", "never") else fix(train_cfg.resume)
    init = fix(train_cfg.init_path) if Path(train_cfg.init_path).exists() else train_cfg.init_path  # or a name
    return train_cfg.replace(data=fix(train_cfg.data), output_dir=fix(train_cfg.output_dir),
                             init_path=init, resume=resume)


def run_with_ray(train_cfg, cfg) -> None:
    """Fit a TorchTrainer running the library loop on cfg.train.workers workers."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t = cfg.train
    workers, cpus = int(t.workers), float(t.cpus_per_worker)
    resources = {"CPU": cpus, **({"GPU": 1} if t.use_gpu else {})}
    if not ray.is_initialized():
        # logical CPUs: enough for the workers plus Ray Train's controller, even on a 2-core machine
        num_cpus = t.ray_num_cpus or max(os.cpu_count() or 1, int(workers * cpus) + 1)
        ray.init(num_cpus=int(num_cpus))
    train_cfg = _absolute(train_cfg)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"train": train_cfg.as_dict()},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=bool(t.use_gpu), resources_per_worker=resources),
        run_config=RunConfig(name="ray", storage_path=train_cfg.output_dir,
                             failure_config=FailureConfig(max_failures=int(t.max_failures))),
    )
    trainer.fit()


def _summary(out: Path) -> dict:
    """The last metrics row and the latest checkpoint of a run folder."""
    from op4ksr.training.loop import METRICS_FILE
    from op4ksr.training.state import latest_checkpoint

    lines = (out / METRICS_FILE).read_text().splitlines() if (out / METRICS_FILE).is_file() else []
    last = json.loads(lines[-1]) if lines else {}
    ckpt = latest_checkpoint(out)
    return {"step": last.get("step"), "loss": last.get("loss"), "checkpoint": str(ckpt) if ckpt else None}


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    cfg = config_from_args(args)

    from omegaconf import OmegaConf

    from op4ksr.training import TrainConfig, train

    try:
        train_cfg = TrainConfig.from_job_config(OmegaConf.to_container(cfg, resolve=True))
    except ValueError as err:
        raise SystemExit(f"op4ksr train: {err}") from None
    out = Path(train_cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    if args.no_ray:
        from op4ksr.inference import resolve_device

        train(train_cfg, device=resolve_device(cfg.model.device))
    else:
        run_with_ray(train_cfg, cfg)
    print(json.dumps(_summary(out)))
    return 0
