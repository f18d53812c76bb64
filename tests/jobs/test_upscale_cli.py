import numpy as np
import pytest
from PIL import Image

from jobs.cli import main as cli


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    (src / "nested" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(src / "wide.png")
    Image.fromarray(rng.integers(0, 255, (24, 12, 3), dtype=np.uint8)).save(src / "nested" / "tall.jpg")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(src / "nested" / "deeper" / "gray.png")
    (src / "nested" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (src / "notes.txt").write_text("not an image, not listed")
    return src


def test_folder_with_nested_subfolder_and_a_broken_file(folder, tmp_path, capsys):
    out = tmp_path / "out"
    status = cli(["upscale", str(folder), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1
    assert "broken.jpg" in err and "ImageDecodeError" in err
    assert Image.open(out / "wide.png").size == (120, 80)
    assert Image.open(out / "nested" / "tall.png").size == (48, 96)
    gray = Image.open(out / "nested" / "deeper" / "gray.png")
    assert gray.size == (64, 64) and gray.mode == "L"
    assert not (out / "nested" / "broken.png").exists()
    assert "3 of 4 images" in err
    assert "path: tiny-trained" in (out / "op4ksr-config.yaml").read_text()  # the default model: trained weights


def test_long_side_format_and_overrides(folder, tmp_path):
    out = tmp_path / "out"
    status = cli(["upscale", str(folder / "wide.png"), "--out", str(out), "--long-side", "96",
                  "--format", "jpeg", "output.quality=80", "--quiet"])
    assert status == 0
    assert Image.open(out / "wide.jpg").size == (96, 64)


def test_unknown_override_names_the_closest_key(folder, tmp_path, capsys):
    assert cli(["upscale", str(folder), "--out", str(tmp_path), "output.qualty=80"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("did you mean 'output.quality'?") and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_mistyped_model_path_says_no_such_folder(folder, tmp_path, capsys):
    assert cli(["upscale", str(folder), "--out", str(tmp_path), "--model", "./modles/op4ksr"]) == 2
    assert capsys.readouterr().err.strip() == "op4ksr upscale: model ./modles/op4ksr: no such folder; give an OP4KSR checkpoint folder"


def test_output_over_the_size_limit_fails_that_image(folder, tmp_path, capsys):
    status = cli(["upscale", str(folder / "wide.png"), "--out", str(tmp_path / "o"), "--scale", "8",
                  "sr.max_output_megapixels=0.01", "--quiet"])
    assert status == 1
    assert "OutputSizeError" in capsys.readouterr().err


def test_help_and_unknown_command(capsys):
    assert cli(["--help"]) == 0
    assert "upscale" in capsys.readouterr().out
    assert cli(["upscal"]) == 2


def test_a_random_weight_preset_runs_only_by_name_and_says_so(folder, tmp_path, capsys):
    assert cli(["upscale", str(folder / "wide.png"), "--out", str(tmp_path / "o"), "--model", "tiny", "--quiet"]) == 0
    assert "model tiny: a preset with random weights" in capsys.readouterr().err
    assert cli(["upscale", str(folder / "wide.png"), "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert "random weights" not in capsys.readouterr().err  # the default model is trained
