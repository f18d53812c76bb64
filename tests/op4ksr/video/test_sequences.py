"""Frame files grouped into sequences; gaps, repeats and mixed sizes or bit depths named in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from op4ksr.video import dpx
from op4ksr.video.errors import SequenceError
from op4ksr.video.frames import check_uniform
from op4ksr.video.sequences import find_sequences, group_sequences, parse_frame_name


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"")


def test_frame_names_parse_with_their_padding():
    assert parse_frame_name(Path("reel1.000123.dpx")) == ("reel1", 123, 6, ".dpx")
    assert parse_frame_name(Path("shot.v2.0007.TIF")) == ("shot.v2", 7, 4, ".tif")
    assert parse_frame_name(Path("photo.png")) is None and parse_frame_name(Path("a.12.jpg")) is None


def test_files_group_into_sequences_in_frame_order(tmp_path):
    _touch(tmp_path, "b.0010.png", "b.0009.png", "a.001.dpx", "a.002.dpx", "a.003.dpx", "notes.txt")
    sequences, problems = find_sequences(tmp_path)
    assert problems == []
    assert [(s.label, [f.number for f in s.frames]) for s in sequences] == [
        ("a.%03d.dpx", [1, 2, 3]), ("b.%04d.png", [9, 10])]
    assert sequences[0].frame_name(2) == "a.002.dpx"


def test_gaps_and_repeats_are_one_line_each_and_other_sequences_go_on(tmp_path):
    _touch(tmp_path, "gap.0001.dpx", "gap.0002.dpx", "gap.0005.dpx", "gap.0006.dpx",
           "dup.0001.png", "dup.001.png", "dup.0002.png", "ok.1.png", "ok.2.png")
    sequences, problems = group_sequences(sorted(tmp_path.iterdir()))
    assert [s.name for s in sequences] == ["ok"]
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert "frame numbers given twice: 1" in problems[0]
    assert "2 frames missing: 3-4 (frames 1-6)" in problems[1]


def _dpx(path: Path, shape: tuple[int, int], bits: int) -> None:
    path.write_bytes(dpx.write_dpx(np.zeros((*shape, 3), np.uint16), bits))


@pytest.mark.parametrize("second, what", [(((4, 6), 12), "bit depths"), (((4, 8), 10), "sizes")])
def test_mixed_sizes_or_bit_depths_are_refused(tmp_path, second, what):
    _dpx(tmp_path / "r.01.dpx", (4, 6), 10)
    _dpx(tmp_path / "r.02.dpx", *second)
    (sequence,), _ = find_sequences(tmp_path)
    with pytest.raises(SequenceError, match=f"mixed {what}: frame 1 is 6x4 10-bit, frame 2 is"):
        check_uniform(sequence)


def test_uniform_sequence_reports_its_geometry(tmp_path):
    for n in (1, 2):
        _dpx(tmp_path / f"r.{n:02d}.dpx", (4, 6), 10)
    (sequence,), _ = find_sequences(tmp_path)
    assert check_uniform(sequence) == (6, 4, 10)
