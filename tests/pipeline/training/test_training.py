"""pipeline.training.launch: Ray Train workers (gloo, CPU) with FSDP + gradient checkpointing + LoRA on the
tiny preset, HR images on the moto S3 server, checkpoints published to it; resume and restart."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from op4ksr.evaluation.benchset import texture
from op4ksr.model import OP4KSR
from op4ksr.training import TrainConfig, loss_terms, train
from op4ksr.training.data import HRImages, sample_batch
from op4ksr.training.loop import Objective, build_model
from tests.synthetic_images import write_hr_textures
from pipeline.storage import open_storage
from pipeline.training.launch import Launch, run_training
from pipeline.training.store import CheckpointStore

# One FSDP step against one process on the same global batch: loss and gradient norm are sums in a
# different order (reduce-scatter over 2 ranks). Measured on this machine: loss 7e-8 and gradient
# norm 3e-7 relative apart; 1e-5 leaves a 30x margin for other CPUs. Adam's first step moves each
# weight by about lr * g / (|g| + eps), so a weight whose |g| is near eps may move differently:
# measured, the largest adapter difference was 0.016 lr and the 99th percentile 2e-7 lr; compared
# within lr / 10 and 1e-4 lr.
STEP_RTOL = 1e-5


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory):
    return write_hr_textures(tmp_path_factory.mktemp("hr"))


def _cfg(data: str, out: str, **kw) -> TrainConfig:
    base = dict(data=data, output_dir=out, steps=2, batch_size=1, crop=64, lr=2e-3, lambda_ap=0.0,
                checkpoint_every=1, num_threads=1, log_every=100, transformer="lora", lora_rank=4,
                vae="encoder_lora", vae_lora_rank=4, strategy="fsdp", gradient_checkpointing=True,
                keep_checkpoints=2)
    return TrainConfig(**{**base, **kw})


def _launch(s3_server=None, **kw) -> Launch:
    import dataclasses

    from jobs.config import load_config
    from jobs.specs import train_launch

    s3 = dict(endpoint_url=s3_server.endpoint_url, credentials=s3_server.credentials) if s3_server else {}
    return dataclasses.replace(train_launch(load_config()), **{"workers": 2, "cpus_per_worker": 1.0, "data_cpus": 0.5,
                                                               **s3, **kw})


def test_first_fsdp_step_matches_one_process(ray_local, hr_folder, tmp_path):
    cfg = _cfg(str(hr_folder), str(tmp_path / "fsdp"), steps=1, lr=1e-3)
    sharded = run_training(cfg, _launch(), stream=False)
    one = train(cfg.replace(output_dir=str(tmp_path / "one"), batch_size=2, strategy="ddp"))
    row = json.loads((tmp_path / "fsdp" / "metrics.jsonl").read_text().splitlines()[0])
    assert sharded["step"] == 1 and row["step"] == 1
    assert row["loss"] == pytest.approx(one.metrics[0]["loss"], rel=STEP_RTOL)
    assert row["grad_norm"] == pytest.approx(one.metrics[0]["grad_norm"], rel=STEP_RTOL)
    from safetensors.torch import load_file

    a = load_file(str(Path(sharded["checkpoint"]) / "train_state" / "lora.safetensors"))
    b = load_file(str(one.checkpoint / "train_state" / "lora.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("vae.encoder.") for k in a)
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert float(diff.max()) <= cfg.lr / 10 and float(diff.quantile(0.99)) <= cfg.lr * 1e-4


@pytest.mark.slow
def test_fsdp_bf16_computes_in_bf16_and_keeps_float32_adapters(ray_local, hr_folder, tmp_path):
    cfg = _cfg(str(hr_folder), str(tmp_path / "bf16"), amp="bf16")
    result = run_training(cfg, _launch(), stream=False)
    assert result["step"] == 2 and 0 < result["loss"] < 1
    from safetensors.torch import load_file

    lora = load_file(str(Path(result["checkpoint"]) / "train_state" / "lora.safetensors"))
    assert {t.dtype for t in lora.values()} == {torch.float32}  # the trained (master) weights
    state = load_file(str(Path(result["checkpoint"]) / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert state["transformer_blocks.0.ff.net.0.proj.weight"].dtype == torch.bfloat16  # frozen, stored in bf16
    model = OP4KSR.from_pretrained(result["checkpoint"])
    assert model.upscale(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)


@pytest.fixture
def hr_bucket(s3_server, s3_bucket):
    """HR images on the moto server: three good ones, one broken file and one smaller than the crop."""
    storage = open_storage(f"s3://{s3_bucket}/hr/", endpoint_url=s3_server.endpoint_url,
                           credentials=s3_server.credentials)
    for i, kind in enumerate(("field", "grating", "shapes")):
        storage.put(f"{kind}.png", _png(texture(kind, i, size=112)))
    storage.put("broken.png", b"\x89PNG\r\n\x1a\n not really")
    storage.put("tiny.png", _png(texture("field", 9, size=32)))
    return s3_bucket


def _fixed_batch_loss(model: OP4KSR, folder: Path, cfg: TrainConfig) -> float:
    images = HRImages(str(folder), cfg.crop)
    x_hr, x_lr = sample_batch(images, 4, cfg.crop, cfg.degrade, torch.Generator().manual_seed(123))
    with torch.no_grad():
        return float(loss_terms(Objective(model, cfg.objective)(x_hr, x_lr), x_hr, cfg, 32)["loss"])


def _kill_rank1_once_at_step_2(marker: Path):
    def on_step(step: int, rank: int) -> None:
        import os
        import signal

        if rank == 1 and step == 2 and not marker.exists():
            marker.write_text("killed at step 2\n")
            os.kill(os.getpid(), signal.SIGKILL)
    return on_step


# One run shows restart, loss, bad inputs and resume together: each Ray Train launch costs about 40 s
# here, and a killed worker's restart is one more.
@pytest.mark.slow
def test_fsdp_lora_run_on_s3_survives_a_killed_worker_lowers_the_loss_skips_bad_inputs_and_resumes(
        ray_local, s3_server, hr_bucket, hr_folder, tmp_path, capsys):
    marker = tmp_path / "killed"
    out = f"s3://{hr_bucket}/runs/r1/"
    cfg = _cfg(f"s3://{hr_bucket}/hr/", out, steps=3, batch_size=2, checkpoint_every=1)
    first = run_training(cfg, _launch(s3_server, max_failures=1), on_step=_kill_rank1_once_at_step_2(marker))
    assert marker.exists(), "rank 1 was never killed"
    assert first["step"] == 3 and first["checkpoint"] == f"{out}checkpoints/step-0000003"
    store = CheckpointStore(_launch(s3_server).storage(out))
    rows = [json.loads(line) for line in store.get_text("metrics.jsonl").splitlines()]
    # the restarted workers resumed from step 2's checkpoint: every step is logged, the last one once
    assert sorted({r["step"] for r in rows}) == [1, 2, 3] and rows[-1]["step"] == 3
    assert max(r["skipped_inputs"] for r in rows) > 0  # draws of broken.png and tiny.png
    # the killed rank's staging folder went when the restarted workers started, theirs when they ended
    from pipeline.storage.scratch import SCRATCH_ROOT

    assert [p.name for p in SCRATCH_ROOT.glob("*") if "-train-rank" in p.name or "-ray-train-" in p.name] == []
    fetched = store.fetch(store.latest(), tmp_path)
    trained = OP4KSR.from_pretrained(fetched)  # merged LoRA, plain layout
    assert _fixed_batch_loss(trained, hr_folder, cfg) < _fixed_batch_loss(build_model(cfg, "cpu"), hr_folder, cfg)
    names = {o.key.split("/")[0] for o in store.storage.iter_objects()}
    assert names == {"latest", "step-0000002", "step-0000003"}

    capsys.readouterr()
    second = run_training(cfg.replace(steps=5), _launch(s3_server))  # the same command with more steps
    assert f"resuming from {out}checkpoints/step-0000003 (step 3 of 5)" in capsys.readouterr().out
    assert second["step"] == 5
    after = [json.loads(line) for line in store.get_text("metrics.jsonl").splitlines()]
    assert after[:len(rows)] == rows and [r["step"] for r in after[len(rows):]] == [4, 5]
    assert {o.key.split("/")[0] for o in store.storage.iter_objects()} == {"latest", "step-0000004", "step-0000005"}


def test_an_empty_prefix_is_an_error_before_any_worker_starts(ray_local, s3_server, s3_bucket):
    cfg = _cfg(f"s3://{s3_bucket}/nothing-here/", f"s3://{s3_bucket}/runs/x/")
    with pytest.raises(ValueError, match=f"train.data=s3://{s3_bucket}/nothing-here/ holds no image"):
        run_training(cfg, _launch(s3_server))
    assert not list(open_storage(f"s3://{s3_bucket}/", endpoint_url=s3_server.endpoint_url,
                                 credentials=s3_server.credentials).iter_objects())
