"""`op4ksr video IN --out OUT --ray`: what a user gets wrong is one line, before any Ray or model starts."""
import pytest

from jobs.cli import main as cli
from op4ksr.provenance.stamp import NO_MANIFEST_NOTE


def _one_line(capsys) -> str:
    """The error's one line; the provenance note a run logs before it lists (as the backfill does) is not
    part of the error."""
    err = [line for line in capsys.readouterr().err.strip().splitlines() if NO_MANIFEST_NOTE not in line]
    assert len(err) == 1, err
    return err[0]


def test_a_missing_input_folder_is_one_line(tmp_path, capsys):
    assert cli(["video", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--ray"]) == 2
    assert "nowhere" in _one_line(capsys)


def test_a_folder_without_a_sequence_or_a_video_is_one_line(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_bytes(b"not read")
    assert cli(["video", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--ray"]) == 2
    line = _one_line(capsys)
    assert "no frame sequence" in line and "no video file" in line


@pytest.mark.parametrize("where", ["same", "images"])
def test_an_output_that_could_overwrite_the_inputs_is_refused_in_one_line(tmp_path, capsys, where):
    inp = tmp_path / "out" / "images" if where == "images" else tmp_path / "out"
    inp.mkdir(parents=True)
    (inp / "r.0001.png").write_bytes(b"")
    assert cli(["video", str(inp), "--out", str(tmp_path / "out"), "--ray"]) == 1
    assert "nothing was written" in _one_line(capsys)


def test_a_bad_fps_is_one_line(tmp_path, capsys):
    assert cli(["video", str(tmp_path), "--out", str(tmp_path / "out"), "--ray", "video.fps=0"]) == 2
    assert "video.fps" in _one_line(capsys)
