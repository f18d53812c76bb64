"""`op4ksr periodicity` on a folder of generated images (one of them unreadable)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs import cli
from jobs.periodicity import main
from tests.synthetic_images import base_image, with_pattern


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _save(x, path):
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    _save(base_image("field", (160, 224), seed=0), d / "clean.png")
    _save(with_pattern("field", (160, 224), 32, 0.04, "grid", seed=0), d / "grid.png")
    (d / "broken.png").write_bytes(b"not an image")
    return d


def test_table_flags_the_grid_and_reports_the_broken_file(folder, capsys):
    status = main([str(folder / n) for n in ("clean.png", "broken.png", "grid.png")])
    out, err = capsys.readouterr()
    assert status == 1
    assert err.count("\n") == 1 and "broken.png" in err
    note, header, *rows = out.strip().splitlines()
    assert note.startswith("absolute scores (no --reference)")
    assert header.split() == ["path", "size", "score", "dominant", "flagged"]
    table = {r.split()[0].rsplit("/", 1)[-1]: r.split() for r in rows}
    assert set(table) == {"clean.png", "grid.png"}
    assert table["clean.png"][1] == "224x160" and table["clean.png"][-1] == "no"
    assert table["grid.png"][3] == "32" and table["grid.png"][-1] == "yes"


def test_json_lines(folder, capsys):
    assert main([str(folder / "grid.png"), str(folder / "clean.png"), "--json", "--period", "32"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["flagged"] for r in rows] == [True, False]
    assert rows[0]["dominant_period_px"] == 32 and rows[0]["period_px"] == 32
    assert rows[0]["ap_score"] > rows[1]["ap_score"]
    assert main([str(folder / "clean.png"), "--json", "--threshold", "-1"]) == 0
    assert json.loads(capsys.readouterr().out)["flagged"] is True


def test_heatmap_png(folder, tmp_path, capsys):
    assert main([str(folder / "grid.png"), "--heatmap", str(tmp_path / "maps")]) == 0
    with Image.open(tmp_path / "maps" / "grid.autocorr.png") as im:
        assert im.format == "PNG" and im.width > 200


def test_heatmaps_of_a_folder_keep_its_layout_and_never_overwrite_each_other(tmp_path, capsys):
    tree = tmp_path / "out"
    for sub in ("a", "b"):
        (tree / sub).mkdir(parents=True)
        _save(base_image("field", (96, 96), seed=1), tree / sub / "x.png")
    _save(base_image("field", (96, 96), seed=2), tree / "a" / "x.jpg")  # the same heatmap name as a/x.png
    maps = tmp_path / "maps"
    assert main([str(tree), "--heatmap", str(maps)]) == 1
    assert sorted(p.relative_to(maps).as_posix() for p in maps.rglob("*.png")) == ["a/x.autocorr.png",
                                                                                "b/x.autocorr.png"]
    err = capsys.readouterr().err
    assert err.count("cannot score") == 1 and "a/x.autocorr.png is already the output of" in err


def test_registered_with_help(capsys):
    assert cli.COMMANDS["periodicity"][0] == "jobs.periodicity"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["periodicity", "--help"])
    assert exit_info.value.code == 0
    assert "usage: op4ksr periodicity" in capsys.readouterr().out


def test_a_pattern_in_one_corner_of_a_large_image_is_flagged(tmp_path, capsys):
    """Tiles cover the whole image: a token-period pattern confined to the bottom-right corner counts."""
    rng = np.random.default_rng(0)
    coarse = Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).resize((1536, 1536), Image.BICUBIC)
    scene = np.asarray(coarse, dtype=np.float32) * 0.6 + 50 + rng.normal(0, 4, (1536, 1536, 1))  # smooth + grain
    tile = rng.normal(0, 1, (32, 32, 1))
    corner = scene.copy()
    corner[-768:, -768:] += 5 * np.tile(tile / tile.std(), (24, 24, 1))  # a 32 px repeat at RMS 5 levels
    for name, img in (("clean", scene), ("corner", corner)):
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
    assert main([str(tmp_path / "clean.png"), str(tmp_path / "corner.png"), "--json"]) == 0
    rows = {Path(r["path"]).stem: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["corner"]["flagged"] and rows["corner"]["dominant_period_px"] == 32 and rows["corner"]["tiles"] == 4
    assert rows["corner"]["worst_tile"] == "1024x1024+512+512"  # the tile holding the corner
    assert not rows["clean"]["flagged"]


@pytest.fixture(scope="module")
def enlarged(tmp_path_factory):
    """A striped LR photo-like image (stripes every 8 px) and its bicubic 4x enlargement (every 32 px, the
    token period) under out/; the inputs under in/, one with another extension; an output with no input."""
    d = tmp_path_factory.mktemp("enlarged")
    rng = np.random.default_rng(0)
    stripes = 0.5 + 0.25 * np.sin(2 * np.pi * np.arange(64)[None, :] / 8) + 0.03 * rng.normal(size=(64, 64))
    grain = base_image("field", (64, 48), seed=1)[0].permute(1, 2, 0).numpy()
    for sub, name, lr, ext in (("", "stripes", np.repeat(stripes[..., None], 3, 2), ".bmp"),
                               ("shelf/", "grain", grain, ".png")):
        lr8 = Image.fromarray((lr.clip(0, 1) * 255).round().astype(np.uint8))
        (d / "in" / sub).mkdir(parents=True, exist_ok=True)
        (d / "out" / sub).mkdir(parents=True, exist_ok=True)
        lr8.save(d / "in" / sub / f"{name}{ext}")
        lr8.resize((lr8.width * 4, lr8.height * 4), Image.BICUBIC).save(d / "out" / sub / f"{name}.png")
    Image.new("RGB", (64, 64), "gray").save(d / "out" / "orphan.png")
    return d


def test_reference_removes_the_bicubic_enlargement_false_flag(enlarged, capsys):
    outputs = [str(enlarged / "out" / n) for n in ("stripes.png", "shelf/grain.png")]
    assert main([outputs[0]]) == 0  # absolute: the enlargement's own stripes at 32 px are flagged
    out = capsys.readouterr().out
    assert "absolute scores" in out.splitlines()[0] and out.splitlines()[-1].split()[-1] == "yes"

    assert main(outputs + ["--reference", str(enlarged / "in"), "--json"]) == 0  # a folder matched by name
    rows = {Path(r["path"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    stripes = rows["stripes.png"]
    assert stripes["reference"].endswith("in/stripes.bmp") and rows["grain.png"]["reference"].endswith("shelf/grain.png")
    assert stripes["ap_score_out"] > 0.3 and stripes["ap_excess"] < 0.01 and not stripes["flagged"]
    assert not rows["grain.png"]["flagged"]

    assert main([outputs[0], "--reference", str(enlarged / "in" / "stripes.bmp")]) == 0  # a file
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["path", "size", "excess", "score", "input", "dominant", "flagged"] and row.endswith("no")


def test_a_folder_of_outputs_is_walked_and_matched_to_its_inputs_by_relative_name(enlarged, capsys):
    status = main([str(enlarged / "out"), "--reference", str(enlarged / "in"), "--json"])
    out, err = capsys.readouterr()
    rows = {Path(r["path"]).relative_to(enlarged / "out").as_posix(): r for r in map(json.loads, out.splitlines())}
    assert set(rows) == {"stripes.png", "shelf/grain.png"}  # orphan.png has no input: one line on stderr
    assert status == 1 and "orphan" in err and err.count("\n") == 1
    assert rows["shelf/grain.png"]["reference"].endswith("in/shelf/grain.png")
    assert rows["stripes.png"]["reference"].endswith("in/stripes.bmp") and not rows["stripes.png"]["flagged"]


def test_a_missing_reference_is_one_line_and_the_others_go_on(enlarged, capsys):
    status = main([str(enlarged / "out" / n) for n in ("orphan.png", "stripes.png")] + ["--reference", str(enlarged / "in")])
    out, err = capsys.readouterr()
    assert status == 1 and err.count("\n") == 1 and "orphan" in err and "no image named orphan.*" in err
    assert "stripes.png" in out


@pytest.mark.parametrize("argv", [["--period", "0"], ["--period", "1"], ["--reference", "/nonexistent/in"]])
def test_bad_options_are_one_line_user_errors(enlarged, argv, capsys):
    assert cli.main(["periodicity", str(enlarged / "out" / "stripes.png"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ("--period must be at least 2 px" in err or "does not exist" in err)
