"""`op4ksr fidelity` on outputs of "another tool": a faithful one, one with a replaced patch, a broken file."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from jobs import cli
from jobs.fidelity import main
from tests import planted

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PLANT = (96, 160, 32, 32)


def _save(x, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(outputs folder: faithful.png, patched.png, broken.png; masters folder with the same names as .tif)."""
    root = tmp_path_factory.mktemp("audit")
    lr = planted.downscale(planted.photo("chelsea", (0, 0, 296, 448)))
    out = planted.back_projected(lr)
    for name in ("faithful", "patched", "broken"):
        _save(lr, root / "masters" / f"{name}.tif")
    _save(out, root / "outputs" / "faithful.png")
    _save(planted.patch_replaced(out, PLANT, (200, 300)), root / "outputs" / "patched.png")
    (root / "outputs" / "broken.png").write_bytes(b"not an image")
    return root / "outputs", root / "masters"


def test_a_folder_audit_flags_the_patch_and_draws_only_its_heatmap(folders, tmp_path, capsys):
    outputs, masters = folders
    status = main([str(outputs), "--reference", str(masters), "--json", "--heatmap", str(tmp_path / "qa"),
                   "--text-check", "off"])
    out, err = capsys.readouterr()
    assert status == 1 and err.count("\n") == 1 and "broken.png" in err
    rows = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in out.splitlines()}
    assert set(rows) == {"faithful.png", "patched.png"}
    assert rows["faithful.png"]["contradicted_fraction"] == 0.0 and not rows["faithful.png"]["evidence_flagged"]
    patched = rows["patched.png"]
    assert patched["evidence_flagged"] and planted.within_one_cell(patched["worst_cell"], PLANT)
    assert patched["reference"].endswith("masters/patched.tif")
    assert sorted(p.name for p in (tmp_path / "qa").iterdir()) == ["patched.contradiction.png"]
    heatmap = Image.open(io.BytesIO((tmp_path / "qa" / "patched.contradiction.png").read_bytes()))
    assert heatmap.size == (448, 296)  # below the view size: the output's own


def test_table_and_thresholds_from_flags(folders, capsys):
    outputs, masters = folders
    args = [str(outputs / "patched.png"), "--reference", str(masters / "patched.tif"), "--text-check", "off"]
    assert main(args) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["path", "contradicted", "worst", "added", "face", "text_cer", "flagged"]
    assert row.split()[-1] == "yes" and row.split()[-2] == "-"  # text not read
    assert main(args + ["--contradiction-threshold", "0.5"]) == 0  # one cell of 126 is not half
    assert capsys.readouterr().out.strip().splitlines()[1].split()[-1] == "no"


def test_a_master_given_first_and_a_missing_tesseract_are_one_line_errors(folders, monkeypatch, capsys):
    outputs, masters = folders
    assert main([str(masters / "faithful.tif"), "--reference", str(outputs / "faithful.png"), "--text-check", "off"]) == 1
    assert "is not larger than its master" in capsys.readouterr().err
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cli.main(["fidelity", str(outputs), "--reference", str(masters), "--text-check", "on"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tesseract-ocr" in err


def test_registered_with_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fidelity", "--help"])
    assert exit_info.value.code == 0
    assert "contradicted_fraction" in capsys.readouterr().out
