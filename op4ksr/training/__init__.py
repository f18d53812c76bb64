"""Training OP4KSR: config, data, trainable parts, checkpoints with train state, the loop.

`train(TrainConfig(...))` runs in-process on one device, or on every worker of a process group
(pipeline/training/launch.py runs it under Ray Train with DDP or FSDP).
"""
from op4ksr.training.config import TrainConfig
from op4ksr.training.loop import TrainHooks, TrainResult, build_model, loss_terms, train

__all__ = ["TrainConfig", "TrainHooks", "TrainResult", "build_model", "loss_terms", "train"]
