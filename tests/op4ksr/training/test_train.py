"""op4ksr.training: a few CPU steps of the tiny preset lower the loss, checkpoint, and resume exactly."""
import json

import pytest
import torch

from op4ksr.checkpoint import load_state_dict
from op4ksr.model import OP4KSR
from op4ksr.training import TrainConfig, loss_terms, train
from op4ksr.training.data import HRImages, sample_batch
from op4ksr.training.loop import Objective, build_model, lr_factor
from tests.tolerance import FORWARD_ATOL
from op4ksr.checkpoint import latest_checkpoint
from tests.synthetic_images import write_hr_textures


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory):
    return write_hr_textures(tmp_path_factory.mktemp("hr"))


def _cfg(hr_dir, out, **kw) -> TrainConfig:
    base = dict(data=str(hr_dir), output_dir=str(out), steps=2, batch_size=2, crop=64, lr=2e-3, lambda_ap=0.0,
                checkpoint_every=2, num_threads=1, vae="decoder", log_every=100)
    return TrainConfig(**{**base, **kw})


def _fixed_batch_loss(cfg: TrainConfig, model: OP4KSR) -> float:
    images = HRImages(cfg.data, cfg.crop)
    x_hr, x_lr = sample_batch(images, 4, cfg.crop, cfg.degrade, torch.Generator().manual_seed(123))
    with torch.no_grad():
        return float(loss_terms(Objective(model, cfg.objective)(x_hr, x_lr), x_hr, cfg, 32)["loss"])


def test_two_steps_lower_the_loss_and_write_a_loadable_checkpoint(hr_dir, tmp_path):
    cfg = _cfg(hr_dir, tmp_path / "run")
    before = _fixed_batch_loss(cfg, build_model(cfg, "cpu"))
    result = train(cfg)
    assert result.step == 2 and result.checkpoint == latest_checkpoint(tmp_path / "run")
    trained = OP4KSR.from_pretrained(result.checkpoint)
    assert _fixed_batch_loss(cfg, trained) < before
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] > 0 and r["cpu_s"] > 0 for r in rows)
    assert trained.upscale(torch.rand(1, 3, 16, 24)).shape == (1, 3, 64, 96)


def test_resume_continues_exactly_where_the_run_stopped(hr_dir, tmp_path):
    straight = train(_cfg(hr_dir, tmp_path / "a", steps=3, checkpoint_every=1))
    train(_cfg(hr_dir, tmp_path / "b", steps=2))
    resumed = train(_cfg(hr_dir, tmp_path / "b", steps=3))  # train.resume=auto picks up step 2
    assert [m["step"] for m in resumed.metrics] == [3]
    # step 3 runs on a reloaded model object: its float results agree within the stated tolerance
    assert resumed.metrics[0]["loss"] == pytest.approx(straight.metrics[-1]["loss"], abs=FORWARD_ATOL)
    for part in ("vae", "transformer"):
        a, b = load_state_dict(straight.checkpoint / part), load_state_dict(resumed.checkpoint / part)
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k], b[k], rtol=0, atol=FORWARD_ATOL) for k in a)
    assert len(list((tmp_path / "a" / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints


def test_lora_checkpoint_is_plain_and_matches_the_adapted_model(hr_dir, tmp_path):
    cfg = _cfg(hr_dir, tmp_path / "lora", transformer="lora", vae="frozen", lora_rank=4, steps=1,
               crop=96, lambda_ap=0.1)
    result = train(cfg)
    assert result.metrics[0]["l_ap"] > 0
    state = load_state_dict(result.checkpoint / "transformer")
    assert not any("lora" in k or "base_layer" in k for k in state)
    assert (result.checkpoint / "train_state" / "lora.safetensors").is_file()
    base = build_model(cfg, "cpu").transformer.state_dict()
    changed = [k for k in base if not torch.equal(base[k], state[k])]
    assert changed and all(k.endswith(".weight") for k in changed)  # only adapted weights moved
    resumed = train(cfg.replace(steps=2))
    assert [m["step"] for m in resumed.metrics] == [2]


def test_autoencoder_objective_trains_only_the_vae(hr_dir, tmp_path):
    cfg = _cfg(hr_dir, tmp_path / "ae", objective="autoencoder", transformer="frozen", vae="all", steps=1)
    result = train(cfg)
    start = build_model(cfg, "cpu")
    trained = OP4KSR.from_pretrained(result.checkpoint)
    assert all(torch.equal(v, trained.transformer.state_dict()[k]) for k, v in start.transformer.state_dict().items())
    assert not all(torch.equal(v, trained.vae.state_dict()[k]) for k, v in start.vae.state_dict().items())


def test_schedule_and_config_checks(hr_dir, tmp_path):
    cfg = _cfg(hr_dir, tmp_path, steps=100, warmup_steps=10, lr_schedule="cosine")
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) < 0.01 and lr_factor(20, cfg, budget_used=1.0) == pytest.approx(0.0)
    assert TrainConfig.from_dict(cfg.as_dict()) == cfg
    with pytest.raises(ValueError, match="nothing to train"):
        _cfg(hr_dir, tmp_path, transformer="frozen", vae="frozen")
    with pytest.raises(ValueError, match="train.crop"):
        _cfg(hr_dir, tmp_path, crop=66)


def test_vae_encoder_lora_checkpoint_is_merged_and_matches_the_adapted_model(hr_dir, tmp_path):
    from op4ksr.training.state import load_weights
    from op4ksr.training.trainable import add_lora, set_trainable
    from tests.tolerance import assert_forwards_close

    cfg = _cfg(hr_dir, tmp_path / "vae-lora", transformer="frozen", vae="encoder_lora", vae_lora_rank=4, steps=1)
    result = train(cfg)
    state = load_state_dict(result.checkpoint / "vae")
    assert not any("lora" in k or "base_layer" in k for k in state)
    adapted = build_model(cfg, "cpu")
    add_lora(adapted, cfg)
    assert {n.split(".")[1] for n, _ in set_trainable(adapted, cfg)} == {"encoder"}
    load_weights(result.checkpoint, adapted, transformer_lora=False, vae_lora=True)
    plain = OP4KSR.from_pretrained(result.checkpoint)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert_forwards_close(plain.encode(x), adapted.encode(x))
        assert not torch.allclose(plain.encode(x), build_model(cfg, "cpu").encode(x), atol=1e-4)  # it trained
