"""`op4ksr train`: parse the config and call pipeline.training.launch (Ray Train) or op4ksr.training (--no-ray)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from jobs.common import add_config_arguments, config_from_args
from jobs.config import ConfigError, to_yaml
from op4ksr.errors import UserError

DESCRIPTION = """\
Train OP4KSR on HR images: random crops degraded on the fly (degrade.*), loss = L1 or
Charbonnier + loss.lambda_ap * L_AP, the transformer fully or with LoRA (train.transformer),
optionally the VAE decoder or LoRA on its encoder (train.vae). Runs under Ray Train's
TorchTrainer with train.workers workers, DDP or FSDP (train.strategy), with per-block gradient
checkpointing (train.gradient_checkpointing); --no-ray runs the same loop in this process.
train.data and train.output_dir take s3:// prefixes (storage.* apply): the HR images stream to
the trainers through Ray Data, cropped and degraded on CPU workers. docs/TRAINING.md.

Checkpoints go to <train.output_dir>/checkpoints/step-N in the model layout (load them with
--model in upscale/eval) plus the train state; rerunning the same command resumes from the
latest one and says so (train.resume=never starts over); train.max_failures restarts killed
workers from it. Per-step metrics: <train.output_dir>/metrics.jsonl.

examples:
  op4ksr train --config configs/train-tiny.yaml
  op4ksr train --config configs/train-tiny.yaml train.steps=200 train.output_dir=runs/t1 loss.lambda_ap=0
  op4ksr train --config my-archive.yaml train.data=/scans/hr train.transformer=lora train.workers=4 train.use_gpu=true
  op4ksr train --config configs/train-flux-dev-lora.yaml train.data=s3://archive/hr/ train.output_dir=s3://archive/runs/lora1/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr train", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--no-ray", action="store_true", help="run the training loop in this process (one worker)")
    return parser


def _launch(cfg):
    """(pipeline.training.launch.Launch from train.* and storage.*, the logical CPUs of a local Ray if
    one has to be started: pipeline/fleet/ray_session.py)."""
    from jobs.specs import train_launch

    t, launch = cfg.train, train_launch(cfg)
    # logical CPUs: the workers, Ray Data's crop tasks and Ray Train's controller, even on 2 cores
    num_cpus = t.ray_num_cpus or max(os.cpu_count() or 1, int(launch.workers * launch.cpus_per_worker) + 2)
    return launch, int(num_cpus)


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    cfg = config_from_args(args)

    from omegaconf import OmegaConf

    from op4ksr.training import TrainConfig

    try:
        train_cfg = TrainConfig.from_job_config(OmegaConf.to_container(cfg, resolve=True))
    except ValueError as err:  # the train.* / loss.* / degrade.* values: a config the user wrote
        raise ConfigError(str(err)) from None
    if args.no_ray:
        return _train_here(train_cfg, cfg)
    from pipeline.storage import StorageError
    from pipeline.training.launch import run_training

    from pipeline.fleet.ray_session import ray_session

    launch, num_cpus = _launch(cfg)
    try:
        if train_cfg.output_dir.startswith("s3://"):
            launch.storage(train_cfg.output_dir).open().put("config.yaml", to_yaml(cfg).encode())
        else:
            Path(train_cfg.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(train_cfg.output_dir) / "config.yaml").write_text(to_yaml(cfg))
        with ray_session(num_cpus):
            result = run_training(train_cfg, launch)
    except StorageError as err:  # unreachable or refused storage: credentials, endpoint, bucket
        raise UserError(str(err)) from None
    print(json.dumps(result))
    return 0


def _train_here(train_cfg, cfg) -> int:
    """--no-ray: the library loop in this process, on local folders only."""
    from op4ksr.loading import resolve_device
    from op4ksr.training import train
    from pipeline.training.launch import summary

    if "s3://" in train_cfg.data + train_cfg.output_dir:
        raise UserError("--no-ray reads and writes local folders only; drop --no-ray for s3:// "
                        "train.data or train.output_dir")
    out = Path(train_cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    try:
        train(train_cfg, device=resolve_device(cfg.model.device))
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    print(json.dumps(summary(train_cfg, None)))
    return 0
