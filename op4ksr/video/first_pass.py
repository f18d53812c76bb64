"""The first decode of a video, before any output: each frame's cut score, comb measure and timestamp.

Both paths start with it: the local one (op4ksr.video.remaster) to find the cuts and decide on
deinterlacing, the fleet's driver (op4ksr.video.video_parts) to plan chunks and the pts a worker
seeks by. A decode that fails after some frames keeps what it decoded and names the error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from op4ksr.video import decode
from op4ksr.video.deinterlace import DeinterlacePlan
from op4ksr.video.errors import VideoInputError
from op4ksr.video.interlace import CombCounter
from op4ksr.video.shots import CutScores, luma_thumbnail


@dataclass
class FirstPass:
    scores: CutScores = field(default_factory=CutScores)
    combs: CombCounter = field(default_factory=CombCounter)
    flagged: int = 0  # frames the decoder flags interlaced
    pts: list[int] = field(default_factory=list)  # each frame's presentation timestamp (stream time base)
    decode_error: str | None = None  # what ended the pass early; None if it reached the end


def first_pass(info: decode.VideoInfo, deinterlace: DeinterlacePlan | None = None,
               refuse_interlaced: bool = False) -> FirstPass:
    """One decode of the whole video (deinterlaced by `deinterlace` if given). VideoInputError if not even
    the first frame decodes, or (under `refuse_interlaced`) the stream says interlaced."""
    measured = FirstPass()
    try:
        for frame in decode.decode_video(info, deinterlace=deinterlace, refuse_interlaced=refuse_interlaced):
            measured.scores.add(luma_thumbnail(frame.rgb))
            measured.combs.add(frame.rgb)
            measured.flagged += frame.interlaced
            measured.pts.append(frame.pts)
    except VideoInputError as err:
        if not measured.scores.scores:
            raise
        measured.decode_error = str(err)
    return measured
