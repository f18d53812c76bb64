"""Video files decoded with PyAV (FFmpeg inside the wheel): the stream's facts, and its frames as tensors.

A frame keeps its presentation timestamp in the stream's time base, so the output can carry the
same times (variable frame rate included). Frames deeper than 8 bits decode through 16-bit RGB,
so a 10-bit master keeps its precision. Interlaced video is refused unless video.deinterlace names
a filter: its field order is read from the stream (FFmpeg's AVFieldOrder) and from each decoded
frame's interlace flag, and upscaling fields as frames would double their combing. With a filter
the frames go through op4ksr.video.deinterlace before they become tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from op4ksr.extras import require
from op4ksr.video.deinterlace import Deinterlacer, DeinterlacePlan
from op4ksr.video.errors import VideoInputError

FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}  # AVFieldOrder
INTERLACED = ("tt", "bb", "tb", "bt")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".mxf", ".m4v", ".avi", ".webm")


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    stream_index: int
    width: int
    height: int
    time_base: Fraction
    average_rate: Fraction | None
    pix_fmt: str
    bit_depth: int  # of the deepest component: 8, 10, 12, 16
    field_order: str
    colour: dict  # color_primaries, color_trc, colorspace, color_range as FFmpeg's integers
    declared_frames: int  # the container's count; 0 if it does not say


@dataclass
class VideoFrame:
    index: int  # 0-based, in presentation order
    pts: int  # in the stream's time base
    rgb: torch.Tensor  # (3, h, w) float32 in [0, 1]
    corrupt: bool = False  # the decoder concealed damage in it (a corrupt packet)
    interlaced: bool = False  # the decoder flagged it interlaced (and it was not deinterlaced)


def av_module():
    return require("av", "video", "reading and writing video files")


def probe(path: Path, allow_interlaced: bool = False) -> VideoInfo:
    """The video stream's facts; VideoInputError (one line) for a file that is not a usable video, or
    one whose stream says interlaced unless `allow_interlaced` (it will be deinterlaced)."""
    av = av_module()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoInputError(f"{path}: not a readable video file ({err})") from err
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise VideoInputError(f"{path}: no video stream (the file has {', '.join(kinds)}); "
                                  "an audio-only file cannot be upscaled")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if not ctx.width or not ctx.height or ctx.format is None:
            raise VideoInputError(f"{path}: the video stream declares no picture size or pixel format")
        field_order = FIELD_ORDERS.get(int(ctx.field_order or 0), "unknown")
        if not allow_interlaced:
            refuse_interlaced(path, field_order)
        colour = {key: int(getattr(ctx, key) or 0) for key in ("color_primaries", "color_trc", "colorspace",
                                                                 "color_range")}
        return VideoInfo(path, stream.index, ctx.width, ctx.height, Fraction(stream.time_base),
                         Fraction(stream.average_rate) if stream.average_rate else None, ctx.format.name,
                         max(c.bits for c in ctx.format.components), field_order, colour, int(stream.frames or 0))


def refuse_interlaced(path: Path, field_order: str) -> None:
    if field_order in INTERLACED:
        raise VideoInputError(f"{path}: interlaced video (field order {field_order}): upscaling fields as "
                              "frames doubles their combing; set video.deinterlace=bwdif (or yadif) to "
                              "deinterlace it before the model")


def frame_tensor(frame, bit_depth: int) -> torch.Tensor:
    """(3, h, w) float32 in [0, 1] of a PyAV VideoFrame, through 16-bit RGB when deeper than 8 bits."""
    if bit_depth > 8:
        samples = frame.to_ndarray(format="rgb48le").astype(np.float32) / 65535.0
    else:
        samples = frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
    return torch.from_numpy(samples).permute(2, 0, 1).contiguous()


def decode_video(info: VideoInfo, packets=None, deinterlace: DeinterlacePlan | None = None,
                 refuse_interlaced: bool = True) -> Iterator[VideoFrame]:
    """The frames of `info`'s video stream in presentation order. `packets`: the demuxed packets of an
    open container to decode (others are skipped), else the file is opened here. `deinterlace`: the
    filter every frame goes through (same count, same timestamps); else a frame flagged interlaced is
    refused when `refuse_interlaced`. A decode error mid-way ends with VideoInputError naming the
    frames decoded so far (those were yielded)."""
    av = av_module()
    owned = None
    if packets is None:
        owned = av.open(str(info.path))
        packets = owned.demux(owned.streams.video[0])
    deinterlacer = Deinterlacer(deinterlace, info.time_base) if deinterlace else None
    index, error = 0, None
    try:
        try:
            for frame, pts, corrupt in decoded_frames(info, packets, refuse_interlaced and not deinterlacer):
                outputs = deinterlacer.feed(frame, pts, corrupt) if deinterlacer else [(frame, pts, corrupt)]
                for out, out_pts, out_corrupt in outputs:
                    yield VideoFrame(index, out_pts, frame_tensor(out, info.bit_depth), out_corrupt,
                                     bool(out.interlaced_frame) and not deinterlacer)
                    index += 1
        except VideoInputError as err:
            error = err  # the frames the filter still holds were decoded: give them first
        for out, out_pts, out_corrupt in deinterlacer.flush() if deinterlacer else []:
            yield VideoFrame(index, out_pts, frame_tensor(out, info.bit_depth), out_corrupt)
            index += 1
        if error is not None:
            raise error
    finally:
        if owned is not None:
            owned.close()


def decoded_frames(info: VideoInfo, packets, refuse: bool):
    """(PyAV frame, pts, corrupt) of every decoded frame of the stream, in order."""
    av = av_module()
    count = 0
    for packet in packets:
        if packet.stream.index != info.stream_index:
            continue
        try:
            frames = packet.decode()
        except av.error.FFmpegError as err:
            raise VideoInputError(f"{info.path}: the video cannot be decoded past frame {count} "
                                  f"({err}); the {count} frames before were processed") from err
        for frame in frames:
            if refuse and frame.interlaced_frame:
                refuse_interlaced(info.path, "tt" if getattr(frame, "top_field_first", True) else "bb")
            yield frame, int(frame.pts if frame.pts is not None else count), bool(frame.is_corrupt)
            count += 1


def checked_frame_count(info: VideoInfo, count: int) -> None:
    """VideoInputError for a video of fewer than two frames: nothing temporal to keep, and likely a still."""
    if count < 2:
        raise VideoInputError(f"{info.path}: the video has {count} frame(s); a video needs at least 2 "
                              "(upscale a still as an image with `op4ksr upscale`)")
