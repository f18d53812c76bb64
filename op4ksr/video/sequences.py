"""Frame sequences: files named `name.<frame>.ext` grouped into one sequence, with its faults named.

A frame file is `<name>.<digits>.<ext>` (the `%0Nd` convention of film scanners and compositors:
`reel1.000123.dpx`). Files that share name, extension and directory are one sequence; their frame
numbers must run without gaps and without repeats (`a.0001.dpx` and `a.001.dpx` are the same frame
twice). Uniform size and bit depth is checked where the frames are read (op4ksr.video.frames).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from op4ksr.video.errors import SequenceError

SEQUENCE_EXTENSIONS = (".dpx", ".tif", ".tiff", ".png", ".exr")
FRAME_NAME = re.compile(r"^(?P<name>.+)\.(?P<frame>\d+)\.(?P<ext>[A-Za-z0-9]+)$")


@dataclass(frozen=True)
class FrameFile:
    path: Path
    number: int
    padding: int  # digits written, e.g. 6 for `reel.000123.dpx`


@dataclass(frozen=True)
class FrameSequence:
    """One sequence, its frames in frame-number order (checked: no gap, no repeat)."""

    directory: Path
    name: str
    extension: str  # lower case, with the dot
    frames: tuple[FrameFile, ...]

    @property
    def padding(self) -> int:
        return self.frames[0].padding

    @property
    def first(self) -> int:
        return self.frames[0].number

    @property
    def label(self) -> str:
        """`name.%06d.dpx`: how film tools write a sequence's name."""
        return f"{self.name}.%0{self.padding}d{self.extension}"

    def frame_name(self, number: int) -> str:
        """The file name of frame `number` in this sequence's naming (same padding)."""
        return f"{self.name}.{number:0{self.padding}d}{self.extension}"


def parse_frame_name(path: Path) -> tuple[str, int, int, str] | None:
    """(name, frame number, padding, extension) of `name.<frame>.ext`, or None if not a frame name."""
    match = FRAME_NAME.match(path.name)
    if match is None or f".{match['ext'].lower()}" not in SEQUENCE_EXTENSIONS:
        return None
    return match["name"], int(match["frame"]), len(match["frame"]), f".{match['ext'].lower()}"


def group_sequences(paths: Iterable[Path]) -> tuple[list[FrameSequence], list[str]]:
    """Sequences from frame files (others ignored), and one line per sequence refused for a gap or a repeat."""
    groups: dict[tuple[Path, str, str], list[FrameFile]] = {}
    for path in paths:
        parsed = parse_frame_name(path)
        if parsed is not None:
            name, number, padding, ext = parsed
            groups.setdefault((path.parent, name, ext), []).append(FrameFile(path, number, padding))
    sequences, problems = [], []
    for (directory, name, ext), files in sorted(groups.items()):
        try:
            sequences.append(checked_sequence(directory, name, ext, files))
        except SequenceError as err:
            problems.append(str(err))
    return sequences, problems


def checked_sequence(directory: Path, name: str, extension: str, files: list[FrameFile]) -> FrameSequence:
    """The sequence of `files` in frame order; SequenceError naming repeated or missing frame numbers."""
    files = sorted(files, key=lambda f: (f.number, f.padding, f.path.name))
    label = f"{directory / name}.#{extension}"
    numbers = [f.number for f in files]
    repeats = sorted({n for n, m in zip(numbers, numbers[1:]) if n == m})
    if repeats:
        raise SequenceError(f"sequence {label}: frame numbers given twice: {_ranges(repeats)} "
                            "(files with different zero-padding name the same frame); remove the extra files")
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if missing:
        raise SequenceError(f"sequence {label}: {len(missing)} frames missing: {_ranges(missing)} "
                            f"(frames {numbers[0]}-{numbers[-1]}); supply them or split the sequence")
    paddings = {f.padding for f in files if len(str(f.number)) < f.padding}
    if len(paddings) > 1:
        raise SequenceError(f"sequence {label}: mixed zero-padding {sorted(paddings)}; rename to one padding")
    return FrameSequence(directory, name, extension, tuple(files))


def find_sequences(folder: Path) -> tuple[list[FrameSequence], list[str]]:
    """The sequences among a folder's files (recursively), and one line per refused sequence."""
    return group_sequences(p for p in sorted(folder.rglob("*")) if p.is_file())


def _ranges(numbers: list[int], most: int = 6) -> str:
    """`3-5, 9, 12-14` for [3, 4, 5, 9, 12, 13, 14], cut after `most` runs."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:most])
    return text + (f", ... ({len(runs) - most} more runs)" if len(runs) > most else "")
