"""One chunk of a video decoded from the keyframe at or before it, its frames numbered by their timestamps.

The driver decodes every frame once to plan (video_parts.cut_scores) and records each frame's
presentation timestamp (pts, in the stream's time base). A worker given a chunk's pts seeks to the
keyframe at or before the chunk's first frame, decodes forward and numbers each frame by finding its
pts in the plan, so the numbering is exactly the driver's without decoding everything before the
chunk (which made a long video quadratic). A frame after the seek point whose pts the plan does not
hold, or a planned pts that never comes, is one clear VideoInputError: the file is not the one planned.

Where seeking cannot give the chunk, the worker decodes from the first frame instead (SeekImpossible,
caught by video_parts.chunk_frames), told before any frame is given:
- the plan's pts are not strictly increasing (frames without timestamps, or duplicates): a pts names
  no single frame;
- the container refuses the seek (FFmpeg raises: a stream that is not seekable);
- no frame decoded after the seek has a pts;
- every seek, to the chunk's first pts and then to 1, 2, 4 ... 64 frames before it, lands past the
  chunk's first frame. A first seek can land past it where the demuxer seeks by decode time (MP4
  with B-frames: the keyframe whose dts is at or before the target shows later), so earlier targets
  are tried; a first frame the decoder flags corrupt (a reference before the seek point) counts as
  landing past it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

from op4ksr.video import decode
from op4ksr.video.errors import VideoInputError


SEEK_BACK = (0, 1, 2, 4, 8, 16, 32, 64)  # frames before the chunk's first to seek to, tried in turn


class SeekImpossible(Exception):
    """Seeking cannot give this chunk; decode from the first frame instead (nothing was given yet)."""


@dataclass
class DecodeCount:
    """How a chunk was decoded: whether by seeking, and how many frames the decoder produced for it
    (the frames skipped before the chunk included)."""
    seeked: bool = False
    decoded: int = 0


def plan_pts_usable(pts: list[int]) -> bool:
    """True where every pts names one frame: strictly increasing in presentation order."""
    return all(a < b for a, b in zip(pts, pts[1:]))


def seek_chunk_frames(info: decode.VideoInfo, start: int, pts: list[int],
                      count: DecodeCount) -> Iterator[decode.VideoFrame]:
    """Frames `start` .. `start + len(pts) - 1`, whose presentation timestamps are `pts` (the plan's),
    decoded from the keyframe at or before the first. SeekImpossible before any frame is given where
    seeking cannot give them; VideoInputError for a frame the plan does not hold or one it misses."""
    if not pts or not plan_pts_usable(pts):
        raise SeekImpossible("the plan's timestamps are not strictly increasing")
    av, step = decode.av_module(), _frame_step(info, pts)
    for back in SEEK_BACK:
        with av.open(str(info.path)) as container:
            frames = _from_seek(av, container, info, pts[0] - back * step, count, first_try=not back)
            first = next(frames, None)
            if first is None or first.pts is None:
                raise SeekImpossible("no frame with a timestamp decoded after the seek")
            if first.pts > pts[0] or (first.pts == pts[0] and first.is_corrupt):
                continue  # landed past the chunk's first frame (a demuxer seeking by decode time): earlier
            count.seeked = True
            yield from _numbered(info, start, pts, itertools.chain([first], frames), count)
            return
    raise SeekImpossible(f"no seek target up to {SEEK_BACK[-1]} frames before pts {pts[0]} landed before it")


def _frame_step(info: decode.VideoInfo, pts: list[int]) -> int:
    """About one frame's duration in the stream's time base: how far back a retried seek goes per frame."""
    if info.average_rate:
        return max(1, round(1 / (info.average_rate * info.time_base)))
    return max(1, pts[1] - pts[0]) if len(pts) > 1 else 1


def _from_seek(av, container, info: decode.VideoInfo, target: int, count: DecodeCount, first_try: bool):
    """The PyAV frames decoded from the keyframe the demuxer seeks to for `target`, counted."""
    stream = container.streams[info.stream_index]
    try:
        container.seek(target, stream=stream, backward=True)
    except (av.error.FFmpegError, OSError) as err:
        if first_try:
            raise SeekImpossible(f"the container refuses the seek ({err})") from err
        container.seek(0, stream=stream, backward=True)  # a target before the stream's start: its start
    for frame, _, _ in decode.decoded_frames(info, container.demux(stream), refuse=False):
        count.decoded += 1
        yield frame


def _numbered(info: decode.VideoInfo, start: int, pts: list[int], frames, count: DecodeCount):
    """The chunk's frames among `frames` (PyAV frames in presentation order), numbered by the plan's pts."""
    position = 0
    for frame in frames:
        if frame.pts is None:
            raise VideoInputError(f"{info.path}: frame {start + position} decoded without a timestamp "
                                  "after seeking; the plan numbers frames by timestamp")
        if frame.pts < pts[position]:
            if position:  # between two planned frames: not the file the driver planned
                raise _unplanned(info, frame.pts, start + position)
            continue  # before the chunk: from the keyframe up to its first frame
        if frame.pts > pts[position]:
            raise VideoInputError(f"{info.path}: frame {start + position} (pts {pts[position]}) is "
                                  f"missing after seeking: the next frame decoded has pts {frame.pts}")
        yield decode.VideoFrame(start + position, frame.pts, decode.frame_tensor(frame, info.bit_depth),
                                bool(frame.is_corrupt), bool(frame.interlaced_frame))
        position += 1
        if position == len(pts):
            return
    raise VideoInputError(f"{info.path}: the video ended after seeking before frame {start + position} "
                          f"(pts {pts[position]}), which the plan holds")


def _unplanned(info: decode.VideoInfo, pts: int, before: int) -> VideoInputError:
    return VideoInputError(f"{info.path}: a frame with pts {pts}, which the plan does not hold, decoded "
                           f"before frame {before} after seeking")
