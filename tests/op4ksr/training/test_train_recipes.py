"""The flux-dev training recipes parse and build their models on the meta device; the training
memory plan counts what they train."""
import pytest
import torch
from omegaconf import OmegaConf

from jobs.config import load_config
from op4ksr.model import OP4KSR
from op4ksr.training.memory import (CROPS, STRATEGIES, lora_param_count, peak_bytes, training_table,
                                 transformer_sizes, usable_bytes)
from op4ksr.training import TrainConfig
from op4ksr.training.trainable import add_lora, set_trainable


def _recipe(name: str) -> TrainConfig:
    cfg = load_config([f"configs/{name}.yaml"], [])
    return TrainConfig.from_job_config(OmegaConf.to_container(cfg, resolve=True))


def _meta_model(cfg: TrainConfig) -> OP4KSR:
    model = OP4KSR.from_preset(cfg.preset, device="meta")
    with torch.device("meta"):
        add_lora(model, cfg)
    return model


def test_lora_recipe_builds_rank_64_adapters_on_the_transformer_and_the_vae_encoder():
    cfg = _recipe("train-flux-dev-lora")
    assert (cfg.preset, cfg.transformer, cfg.vae, cfg.lora_rank, cfg.vae_lora_rank) == \
        ("flux-dev", "lora", "encoder_lora", 64, 64)
    assert cfg.crop == 1024 and cfg.amp == "bf16" and cfg.gradient_checkpointing and cfg.lambda_ap > 0
    model = _meta_model(cfg)
    trained = dict(set_trainable(model, cfg))
    assert trained and all("lora_" in name for name in trained)
    in_transformer = sum(p.numel() for n, p in trained.items() if n.startswith("transformer."))
    in_encoder = sum(p.numel() for n, p in trained.items() if n.startswith("vae.encoder."))
    # the memory plan's count of adapter parameters is what peft injected
    assert in_transformer == lora_param_count(OP4KSR.from_preset("flux-dev", device="meta").transformer, 64,
                                              cfg.lora_targets)
    assert 150e6 < in_transformer < 400e6 and in_encoder > 0
    assert not any(n.startswith("vae.decoder.") for n in trained)


def test_fsdp_recipe_trains_the_whole_transformer_sharded():
    cfg = _recipe("train-flux-dev-fsdp")
    assert (cfg.strategy, cfg.transformer, cfg.vae) == ("fsdp", "full", "encoder_lora")
    trained = dict(set_trainable(_meta_model(cfg), cfg))
    in_transformer = sum(p.numel() for n, p in trained.items() if n.startswith("transformer."))
    assert in_transformer == transformer_sizes("flux-dev").params > 11e9


def test_training_memory_plan():
    sizes = transformer_sizes("flux-dev")
    assert sizes.blocks == 57 and sizes.width == 3072 and sizes.token_px == 32
    for strategy in STRATEGIES:
        # checkpointing always saves memory, and more at larger crops
        saved = [peak_bytes(sizes, strategy, c, False) - peak_bytes(sizes, strategy, c, True) for c in CROPS]
        assert 0 < saved[0] < saved[1] < saved[2]
        peaks = [peak_bytes(sizes, strategy, c, False) for c in CROPS]
        assert peaks == sorted(peaks)
    # a full fine-tune's 16 bytes per parameter over 8 GPUs vs LoRA's bf16 replica: both ~24 GB of state
    assert peak_bytes(sizes, "fsdp_full", 1024, True) == pytest.approx(16 * sizes.params / 8, rel=0.2)
    assert peak_bytes(sizes, "lora_ddp", 1024, True) == pytest.approx(2 * sizes.params, rel=0.2)
    assert peak_bytes(sizes, "fsdp_full", 1024, True, gpus=1) > usable_bytes(141)  # one GPU cannot hold it
    rows = training_table()
    assert len(rows) == len(STRATEGIES) * 2 * len(CROPS)
    big = {(r["strategy"], r["checkpointing"]): r for r in rows if r["crop"] == 2048}
    assert big[("lora_ddp", True)]["fits_80gb"] and not big[("lora_ddp", False)]["fits_80gb"]
    assert big[("lora_ddp", False)]["fits_141gb"]
