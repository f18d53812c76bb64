"""TrainConfig: everything one training run reads, built from the job config's sections."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from op4ksr.images.degrade import DegradeConfig

OBJECTIVES = ("sr", "autoencoder")
TRANSFORMER_MODES = ("full", "lora", "frozen")
VAE_MODES = ("frozen", "decoder", "all", "encoder_lora")
STRATEGIES = ("ddp", "fsdp")
PIXEL_LOSSES = ("l1", "charbonnier")
SCHEDULES = ("constant", "cosine")
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                        "to_add_out", "proj_mlp", "proj_out")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model init, trainable parts, loss, optimiser, checkpoints."""

    data: str  # folder of HR images, or offline:train / offline:heldout
    output_dir: str
    # model to start from (op4ksr.loading): a checkpoint or run folder or shipped name, else the preset
    init_path: str = ""
    preset: str = "tiny"
    preset_seed: int = 0
    rfr_mode: str | None = None  # None: the starting model's saved RFR
    rfr_scale: float | None = None
    # what trains
    objective: str = "sr"
    transformer: str = "full"
    vae: str = "frozen"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    vae_lora_rank: int = 8  # vae=encoder_lora: LoRA on the VAE encoder (OMGSR-F, TSD-SR)
    vae_lora_alpha: float = 8.0
    zero_init_proj_out: bool = False
    # data
    scale: int = 4
    crop: int = 128
    batch_size: int = 4
    augment: bool = True
    cache_images: bool = True
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    # loss
    pixel_loss: str = "l1"
    charbonnier_eps: float = 1e-3
    lambda_ap: float = 0.1
    ap_period: int | None = None  # None: the model's token period in output pixels
    # optimiser
    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    grad_clip: float = 1.0
    amp: str = "none"
    # data parallelism over the launcher's workers: ddp (a full replica per worker) or fsdp
    # (fully_shard, one unit per transformer block); gradient checkpointing per block
    strategy: str = "ddp"
    gradient_checkpointing: bool = False
    seed: int = 0
    num_threads: int = 0
    # bookkeeping
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto | never | a checkpoint folder
    max_minutes: float | None = None  # wall-clock budget of this session
    max_cpu_minutes: float | None = None  # CPU-time budget of the whole run (all sessions): fair on shared machines

    def __post_init__(self) -> None:
        for name, allowed in (("objective", OBJECTIVES), ("transformer", TRANSFORMER_MODES), ("vae", VAE_MODES),
                              ("pixel_loss", PIXEL_LOSSES), ("lr_schedule", SCHEDULES), ("amp", ("none", "bf16")),
                              ("strategy", STRATEGIES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train.{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if not self.data:
            raise ValueError("train.data is empty: give a folder or s3:// prefix of HR images, or offline:train")
        if self.crop % self.scale or self.crop < 32:
            raise ValueError(f"train.crop={self.crop} must be >= 32 and a multiple of the scale {self.scale}")
        if self.degrade.scale != self.scale:
            raise ValueError(f"degrade.scale={self.degrade.scale} differs from the training scale {self.scale}")
        if self.steps < 0 or self.batch_size < 1 or self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("train.steps >= 0, train.batch_size >= 1, train.checkpoint_every >= 1 and "
                             "train.keep_checkpoints >= 1 are required")
        trains_nothing = self.transformer == "frozen" and self.vae == "frozen"
        if trains_nothing or (self.objective == "autoencoder" and self.vae == "frozen"):
            raise ValueError(f"nothing to train: objective={self.objective}, transformer={self.transformer}, "
                             f"vae={self.vae}")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """A JSON-ready dict that `from_dict` turns back into an equal config."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["degrade"] = self.degrade.as_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        values = dict(values)
        values["degrade"] = DegradeConfig.from_dict(values.get("degrade", {}))
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)

    @classmethod
    def from_job_config(cls, cfg: dict) -> "TrainConfig":
        """The run's config from the job config sections (train, model, rfr, loss, degrade, sr) as plain dicts."""
        t, loss = cfg["train"], cfg["loss"]
        scale = int(cfg["sr"]["scale"])
        own = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in t.items() if k in own}
        values.update(
            init_path=cfg["model"]["path"] or "", preset=cfg["model"]["preset"], preset_seed=int(cfg["model"]["seed"]),
            rfr_mode=cfg["rfr"]["mode"], rfr_scale=None if cfg["rfr"]["scale"] is None else float(cfg["rfr"]["scale"]),
            scale=scale,
            pixel_loss=loss["pixel"], charbonnier_eps=float(loss["charbonnier_eps"]),
            lambda_ap=float(loss["lambda_ap"]), ap_period=loss["ap_period"],
            degrade=DegradeConfig.from_dict({**cfg["degrade"], "scale": scale}),
        )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)
