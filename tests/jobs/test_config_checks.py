"""Values that pass their key's type but cannot work are refused in one line before anything is listed,
started or written (issue 27, item 4): NaN and infinity anywhere, a device the machine lacks, warm-up
shapes the size policy refuses, a run id that is not one safe name, a URI that is not text."""
import pytest
import torch

from jobs.cli import main as cli


@pytest.fixture
def scans(tmp_path):
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "a.png").write_bytes(b"not read: every case stops before the listing")
    return tmp_path


CASES = [
    ("sr.scale=.nan", "sr.scale=nan is not a finite number"),
    ("report.threshold=.nan", "report.threshold=nan is not a finite number"),
    ("report.threshold=.inf", "report.threshold=inf is not a finite number"),
    ("actors.warmup_shapes=[[64,.inf]]", "actors.warmup_shapes[0][1]=inf is not a finite number"),
    ("cost.presets.mine.gpu_hour_usd=-.inf", "cost.presets.mine.gpu_hour_usd=-inf is not a finite number"),
    ("model.device=cuda:99", "model.device=cuda:99: this machine has "),
    ("actors.warmup_shapes=[[0,0]]", "actors.warmup_shapes[0]=[0, 0]: each side must be at least sr.min_output_side=32"),
    ("actors.warmup_shapes=[[64]]", "actors.warmup_shapes[0]=[64]: give an output shape [H, W]"),
    ("actors.warmup_shapes=[[100000,100000]]", "is over sr.max_output_megapixels=40"),
    ("run.id=../x", "run.id='../x' is not one of the names a run folder may have"),
    ("run.id=a/b", "run.id='a/b' is not one of the names a run folder may have"),
    ("input.uri=123", "input.uri=123 must be text"),
]


@pytest.mark.parametrize("override, message", CASES)
def test_a_value_that_cannot_work_is_one_line_naming_its_key_before_anything_is_written(scans, capsys, override,
                                                                                        message):
    status = cli(["backfill", "--config", "local", f"input.uri={scans / 'scans'}", f"output.uri={scans / 'out'}",
                  override, "--dry-run"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("op4ksr backfill: ") and message in err
    assert not (scans / "out").exists()  # nothing written, not even the run's config


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: model.device=cuda is right here")
def test_model_device_cuda_without_cuda_is_refused_unless_the_actors_reserve_gpus(scans, capsys):
    args = ["backfill", "--config", "local", "--dry-run", f"input.uri={scans / 'scans'}", f"output.uri={scans / 'out'}",
            "model.device=cuda"]
    assert cli(args) == 2
    assert "model.device=cuda: this machine has no CUDA GPU" in capsys.readouterr().err
    assert cli(["upscale", str(scans / "scans"), "--out", str(scans / "up"), "model.device=cuda"]) == 2
    assert "model.device=cuda: this machine has no CUDA GPU" in capsys.readouterr().err
    # GPU actors run on nodes this driver cannot see: their device is theirs to have (a dry run starts none)
    assert cli(args + ["actors.num_gpus=1", "sr.device_memory_gb=80"]) == 0


def test_a_missing_input_folder_is_one_line_and_leaves_nothing_behind(tmp_path, capsys):
    status = cli(["backfill", "--config", "local", f"input.uri={tmp_path / 'nope'}", f"output.uri={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert status == 2 and err.strip() == (f"op4ksr backfill: input.uri={tmp_path / 'nope'}: folder {tmp_path / 'nope'} "
                                           "does not exist: fix the input uri")
    assert not (tmp_path / "out").exists()
