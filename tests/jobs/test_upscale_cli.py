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
    labelled = Image.open(out / "wide.jpg")
    assert labelled.size == (96, 64)
    xmp = labelled.info["xmp"].decode()  # every output says what made it (docs/PROVENANCE.md)
    assert "digitalsourcetype/compositeWithTrainedAlgorithmicMedia" in xmp and "wide.png</stRef:filePath>" in xmp


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


def _image(path, size=(12, 16), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def test_inputs_that_name_one_output_refuse_the_later_one_and_overwrite_nothing(tmp_path, capsys):
    # a.jpg and a.png in one folder both name out/a.png; two 1.jpg from different folders both name out/1.png
    src, one, two, out = tmp_path / "src", tmp_path / "d1", tmp_path / "d2", tmp_path / "out"
    _image(src / "a.jpg", seed=1)
    _image(src / "a.png", size=(8, 8), seed=2)
    _image(one / "1.jpg", seed=3)
    _image(two / "1.jpg", size=(8, 8), seed=4)
    status = cli(["upscale", str(src), str(one / "1.jpg"), str(two / "1.jpg"), str(src / "a.jpg"), "--out", str(out),
                  "--quiet"])
    err = capsys.readouterr().err
    assert status == 1
    refused = [line for line in err.splitlines() if line.startswith("refused: ")]
    assert refused == [f"refused: {src / 'a.png'}: OutputKeyCollisionError: its output {out / 'a.png'} is already "
                       f"the output of {src / 'a.jpg'}; rename one of them (or narrow input.extensions)",
                       f"refused: {two / '1.jpg'}: OutputKeyCollisionError: its output {out / '1.png'} is already "
                       f"the output of {one / '1.jpg'}; rename one of them (or narrow input.extensions)"]
    assert f"2 of 4 images written to {out}; 2 failed" in err  # a.jpg given twice counts once
    assert Image.open(out / "a.png").size == (64, 48)  # the first given: a.jpg, 16x12 -> 64x48
    assert Image.open(out / "1.png").size == (64, 48)  # d1/1.jpg's, not d2's 8x8
    assert sorted(p.name for p in out.iterdir()) == ["1.png", "a.png", "op4ksr-config.yaml"]


def test_an_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    _image(src / "a.png")
    _image(src / "b.png")
    out.mkdir()
    (out / "a.png").write_bytes(b"an earlier output")
    assert cli(["upscale", str(src), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (out / "a.png").read_bytes() == b"an earlier output" and Image.open(out / "b.png").size == (64, 48)
    assert f"1 of 2 images written to {out}; 1 skipped: their output exists (e.g. {out / 'a.png'}); " \
           "--overwrite replaces them" in err
    assert cli(["upscale", str(src), "--out", str(out), "--quiet"]) == 0  # a rerun does nothing, loads no model
    assert f"0 of 2 images written to {out}; 2 skipped" in capsys.readouterr().err
    assert cli(["upscale", str(src / "a.png"), "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert Image.open(out / "a.png").size == (64, 48)
    assert f"1 of 1 images written to {out}" in capsys.readouterr().err


def test_help_documents_the_collision_rule_and_overwrite(capsys):
    with pytest.raises(SystemExit):
        cli(["upscale", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the later one is refused by name and writes nothing" in text and "--overwrite" in text
