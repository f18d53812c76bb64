"""Which output an input writes, and which input owns an output that two of them would write.

An output is named after its input with the extension replaced by the output format's, so
`a.jpg` and `a.png` both name `a.png`. The rule, the same for `op4ksr upscale` and a backfill:
the first input to claim an output owns it (earlier runs claim first, then the listing in key
order, or the command line in the order given); a later one is refused by name and writes
nothing, so no input's output is ever overwritten by another's.
"""
from __future__ import annotations

import posixpath
from collections import OrderedDict

from op4ksr.images.formats import EXTENSIONS


class OutputKeyCollisionError(ValueError):
    """Two inputs map to one output (`a.jpg`, `a.png` -> a.png): the later one is refused."""


def output_name(input_name: str, fmt: str) -> str:
    """`input_name` (a /-separated relative path) with its extension replaced by `fmt`'s."""
    stem, _ = posixpath.splitext(input_name)
    return f"{stem}{EXTENSIONS[fmt]}"


def collision_error(output: str, owner: str) -> OutputKeyCollisionError:
    """The error of an input refused because `owner` claimed its `output` first."""
    return OutputKeyCollisionError(f"its output {output} is already the output of {owner}; "
                                   "rename one of them (or narrow input.extensions)")


class OutputClaims:
    """The owner of each output claimed so far: the first input that claimed it.

    `window` bounds memory for a streamed listing: only the last `window` outputs are
    remembered (a listing in key order keeps such pairs close together); None remembers all.
    """

    def __init__(self, window: int | None = None):
        self.window = window
        self.owners: OrderedDict[str, str] = OrderedDict()  # output -> the input that claimed it

    def claim(self, output: str, source: str) -> str | None:
        """None if `source` owns `output` (now or already); else the input that owns it."""
        owner = self.owners.get(output)
        if owner is None:
            self.owners[output] = source
            if self.window is not None and len(self.owners) > self.window:
                self.owners.popitem(last=False)
            return None
        return None if owner == source else owner
