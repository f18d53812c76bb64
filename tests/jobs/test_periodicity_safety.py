"""`op4ksr periodicity` on hostile inputs (issue 27, item 6): a symlink loop fails alone in one line,
a period larger than a tile is refused, a reference of another aspect ratio gets a warning."""
import numpy as np
from PIL import Image

from jobs.cli import main as cli


def _png(path, h, w, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def test_a_symlink_loop_is_one_line_and_the_other_files_are_scored(tmp_path, capsys):
    _png(tmp_path / "good.png", 64, 64)
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    assert cli(["periodicity", str(tmp_path / "loop.png"), str(tmp_path / "good.png"), "--json"]) == 1
    out, err = capsys.readouterr()
    assert '"path": "' + str(tmp_path / "good.png") in out  # scored
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"op4ksr periodicity: cannot score {tmp_path / 'loop.png'}: ")


def test_a_period_larger_than_a_tile_is_refused(tmp_path, capsys):
    _png(tmp_path / "a.png", 64, 64)
    assert cli(["periodicity", str(tmp_path / "a.png"), "--period", "100000"]) == 2
    assert capsys.readouterr().err.strip() == ("op4ksr periodicity: --period 100000 px is larger than a scored tile "
                                               "(1024 px a side): no lag of it fits in one; give the period of the "
                                               "grid you look for (32 for F16 models)")
    assert cli(["periodicity", str(tmp_path / "a.png"), "--period", "100"]) == 1  # larger than this image
    assert "smaller than the period of 100 px" in capsys.readouterr().err


def test_a_reference_of_another_aspect_ratio_is_scored_with_a_warning(tmp_path, capsys):
    _png(tmp_path / "out.png", 130, 256)
    _png(tmp_path / "same.png", 65, 128, 1)  # 2x: the same picture
    _png(tmp_path / "odd.png", 32, 63, 2)    # long side 256 from 63 px: 32 px round to 130, the same picture
    _png(tmp_path / "other.png", 64, 64, 3)  # another picture
    for reference, warned in (("same.png", False), ("odd.png", False), ("other.png", True)):
        assert cli(["periodicity", str(tmp_path / "out.png"), "--reference", str(tmp_path / reference), "--json"]) == 0
        err = capsys.readouterr().err
        assert ("another aspect ratio" in err) is warned, (reference, err)
