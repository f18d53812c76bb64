"""Deinterlacing before the model, with FFmpeg's bwdif or yadif filters through PyAV's filter graph.

One frame out per frame in (the filters' `send_frame` mode), so the frame count and every
timestamp stay the source's: each output frame is given the presentation timestamp of the input
frame it was made from (the filters halve the time base, as their `send_field` mode would need;
we do not depend on that). Both filters interpolate the missing field from its own field's lines
and the neighbouring frames (bwdif: w3fdif's filter where the picture is still, cubic where it
moves; yadif: an edge-directed spatial check); neither adds detail.

Which field comes first: `video.field_order` when it is tff or bff, else the stream's field order
(tt/bt display the top field first, bb/tb the bottom), else each frame's own flag (`parity=auto`;
FFmpeg takes an unflagged frame for top field first).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction

FILTERS = ("bwdif", "yadif")
TOP_FIRST, BOTTOM_FIRST = ("tt", "bt"), ("bb", "tb")  # FFmpeg's AVFieldOrder: the second letter is displayed first


@dataclass(frozen=True)
class DeinterlacePlan:
    """What is done to an interlaced video before the model, and why (the report's `deinterlace`)."""

    filter: str  # bwdif | yadif
    parity: str  # tff | bff | auto (each frame's flag)
    because: str  # what said the video is interlaced

    def report(self) -> dict:
        return {"filter": self.filter, "field_order": self.parity, "because": self.because}


def parity_for(setting: str, stream_field_order: str) -> str:
    """The filters' `parity`: the configured order, else the stream's, else `auto` (each frame's flag)."""
    if setting in ("tff", "bff"):
        return setting
    if stream_field_order in TOP_FIRST:
        return "tff"
    if stream_field_order in BOTTOM_FIRST:
        return "bff"
    return "auto"


class Deinterlacer:
    """Feeds decoded PyAV frames through one filter graph; yields (frame, pts, corrupt) in order."""

    def __init__(self, plan: DeinterlacePlan, time_base: Fraction):
        if plan.filter not in FILTERS:
            raise ValueError(f"deinterlace filter {plan.filter!r} is not one of {', '.join(FILTERS)}")
        self.plan, self.time_base = plan, time_base
        self._graph = None
        self._waiting: deque[tuple[int, bool]] = deque()  # (pts, corrupt) of frames pushed, not yet pulled

    def _build(self, frame) -> None:
        import av

        graph = av.filter.Graph()
        source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                  time_base=self.time_base)
        # deint=all: a video that measured combed has frames that do not say they are interlaced
        deinterlace = graph.add(self.plan.filter, mode="send_frame", parity=self.plan.parity, deint="all")
        graph.link_nodes(source, deinterlace, graph.add("buffersink")).configure()
        self._graph = graph

    def feed(self, frame, pts: int, corrupt: bool) -> list:
        """The frames the filter gives back after `frame` (it holds one back to see the next)."""
        if self._graph is None:
            self._build(frame)
        self._waiting.append((pts, corrupt))
        self._graph.push(frame)
        return self._drain()

    def flush(self) -> list:
        """The frames still held at the end of the video."""
        if self._graph is None:
            return []
        self._graph.push(None)
        return self._drain()

    def _drain(self) -> list:
        import av

        out = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return out
            pts, corrupt = self._waiting.popleft()
            out.append((frame, pts, corrupt))
