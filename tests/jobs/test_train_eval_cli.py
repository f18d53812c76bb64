"""`op4ksr bench-build`, `op4ksr train` and `op4ksr eval` end to end on tiny inputs, plus the
evaluation helpers they rest on (Y metrics, patch-based blending)."""
import csv
import json

import pytest
import torch
from PIL import Image

from jobs import bench_build, eval as eval_job, train as train_job
from jobs.cli import main as cli_main
from op4ksr.evaluation.evaluate import psnr_ssim_y
from op4ksr.inference.tiling import upscale_tiled
from op4ksr.imageops import bicubic_resize
from op4ksr.model import OP4KSR
from op4ksr.errors import UserError
from tests.synthetic_images import write_hr_textures


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory):
    return write_hr_textures(tmp_path_factory.mktemp("hr"), first_seed=100, size=144)


@pytest.fixture(scope="module")
def bench(hr_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert bench_build.main(["--hr", str(hr_dir), "--out", str(out), "--scale", "4", "bench.hr_size=[128,128]"]) == 0
    return out


def test_bench_build_is_deterministic(hr_dir, bench, tmp_path):
    manifest = json.loads((bench / "manifest.json").read_text())
    assert len(manifest["items"]) == 3 and manifest["scale"] == 4
    item = manifest["items"][0]
    assert item["hr_size"] == [128, 128] and item["lr_size"] == [32, 32]
    assert Image.open(bench / item["lr"]).size == (32, 32)
    bench_build.main(["--hr", str(hr_dir), "--out", str(tmp_path), "--scale", "4", "bench.hr_size=[128,128]"])
    again = json.loads((tmp_path / "manifest.json").read_text())
    assert [i["lr_sha256"] for i in again["items"]] == [i["lr_sha256"] for i in manifest["items"]]


def test_eval_on_a_three_image_bench_writes_tables_and_a_contact_sheet(bench, tmp_path):
    out = tmp_path / "eval"
    assert eval_job.main(["--bench", str(bench), "--model", "tiny", "--out", str(out), "eval.tile=16",
                          "eval.tile_overlap=4", "eval.contact_sheet=2"]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 4
    assert {r["method"] for r in rows} == {"bicubic", "lanczos", "model", "model-tiled"}
    by = {(r["image"], r["method"]): r for r in rows}
    assert all(20 < float(by[(name, "bicubic")]["psnr_y"]) < 60 for name, _ in by)
    assert "| bicubic | 3 |" in (out / "results.md").read_text()
    assert Image.open(out / "contact_sheet.png").size[0] == 192 * 6  # LR, 4 methods, HR


def test_train_cli_then_eval_the_checkpoint(hr_dir, bench, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--no-ray", f"train.data={hr_dir}", f"train.output_dir={run}", "train.steps=2", "train.batch_size=1",
            "train.crop=64", "train.num_threads=1", "train.checkpoint_every=2"]
    assert cli_main(["train", *args]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and (run / "config.yaml").is_file()
    assert eval_job.main(["--bench", str(bench), "--model", summary["checkpoint"], "--out", str(tmp_path / "e"),
                          "eval.tile=0", "eval.baselines=[bicubic]"]) == 0
    with open(tmp_path / "e" / "summary.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["bicubic", "model"]


@pytest.mark.slow
def test_train_through_ray_train(ray_local, hr_dir, tmp_path, capsys):
    run = tmp_path / "ray"
    assert train_job.main([f"train.data={hr_dir}", f"train.output_dir={run}", "train.steps=2", "train.batch_size=1",
                           "train.crop=64", "train.checkpoint_every=1", "train.num_threads=1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2
    OP4KSR.from_pretrained(summary["checkpoint"])


def test_train_refuses_an_empty_prefix_and_s3_without_ray(ray_local, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"train.data={empty} holds no image"):
        train_job.main([f"train.data={empty}", f"train.output_dir={tmp_path / 'run'}"])
    with pytest.raises(UserError, match="--no-ray reads and writes local folders only"):
        train_job.main(["--no-ray", "train.data=s3://bucket-x/hr/", f"train.output_dir={tmp_path / 'run'}"])


def test_help_and_bad_input(capsys):
    for module, prog in ((train_job, "op4ksr train"), (eval_job, "op4ksr eval"), (bench_build, "op4ksr bench-build")):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0 and prog in capsys.readouterr().out
    with pytest.raises(UserError, match="manifest.json is missing"):
        eval_job.main(["--bench", "/nonexistent", "--model", "tiny"])


class _Bicubic:
    """Stands in for the model: upscale = bicubic, so tiling must not change the interior."""

    def upscale(self, x, size):
        return bicubic_resize(x, size)


def test_patch_based_blending_is_a_partition_of_unity():
    x = torch.rand(1, 3, 40, 56)
    tiled = upscale_tiled(_Bicubic(), x, (160, 224), tile=16, overlap=4)
    whole = bicubic_resize(x, (160, 224))
    assert tiled.shape == whole.shape
    # tiles see less context at their borders, so only the interior of each tile matches closely
    assert (tiled - whole).abs().mean() < 0.02


def test_psnr_ssim_y_values():
    a = torch.rand(1, 3, 32, 32)
    psnr, ssim = psnr_ssim_y(a, a.clone(), border=4)
    assert psnr == float("inf") and ssim == pytest.approx(1.0)
    psnr, ssim = psnr_ssim_y((a + 0.1).clamp(0, 1), a, border=4)
    assert 15 < psnr < 30 and ssim < 1


def test_eval_scores_a_peer_upscaler_as_the_model(bench, tmp_path):
    """peer.kind=spandrel: a random-weight ESRGAN checkpoint is scored beside the baselines."""
    from tests.actors.test_peers import save_random_esrgan

    checkpoint = save_random_esrgan(tmp_path / "esrgan.safetensors")
    out = tmp_path / "eval"
    assert eval_job.main(["--bench", str(bench), "--out", str(out), "eval.tile=0", "eval.baselines=[bicubic]",
                          "eval.contact_sheet=0", "peer.kind=spandrel", f"peer.path={checkpoint}"]) == 0
    with open(out / "results.csv") as f:
        rows = {(r["image"], r["method"]): r for r in csv.DictReader(f)}
    assert {method for _, method in rows} == {"bicubic", "model"}
    # a random network is no upscaler: far below bicubic, which is what shows it really ran
    for image, method in rows:
        if method == "model":
            assert float(rows[(image, "model")]["psnr_y"]) < float(rows[(image, "bicubic")]["psnr_y"]) - 5
    assert "spandrel:esrgan@" in (out / "results.md").read_text()
