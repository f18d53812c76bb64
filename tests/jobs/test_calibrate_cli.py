import numpy as np
from PIL import Image

from jobs.cli import main as cli
from jobs.config import load_config


def test_calibrate_writes_snippet_and_chart(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(tmp_path / f"s{i}.png")
    out = tmp_path / "cal"
    assert cli(["calibrate", "--images", str(tmp_path), "--scales", "1,4", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "<- chosen" in table and "rfr.scale" in table
    assert load_config([str(out / "rfr.yaml")]).rfr.mode == "base"
    assert (out / "rfr_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
