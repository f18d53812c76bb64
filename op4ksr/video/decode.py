"""Video files decoded with PyAV (FFmpeg inside the wheel): the stream's facts, and its frames as tensors.

A frame keeps its presentation timestamp in the stream's time base, so the output can carry the
same times (variable frame rate included). Frames deeper than 8 bits decode through 16-bit RGB,
so a 10-bit master keeps its precision. Interlaced video is refused: its field order is read from
the stream (FFmpeg's AVFieldOrder) and from each decoded frame's interlace flag, and upscaling
fields as frames would double their combing; the message names video.deinterlace.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from op4ksr.extras import require
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


def av_module():
    return require("av", "video", "reading and writing video files")


def probe(path: Path) -> VideoInfo:
    """The video stream's facts; VideoInputError (one line) for a file that is not a usable video."""
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
        refuse_interlaced(path, field_order)
        colour = {key: int(getattr(ctx, key) or 0) for key in ("color_primaries", "color_trc", "colorspace",
                                                                 "color_range")}
        return VideoInfo(path, stream.index, ctx.width, ctx.height, Fraction(stream.time_base),
                         Fraction(stream.average_rate) if stream.average_rate else None, ctx.format.name,
                         max(c.bits for c in ctx.format.components), field_order, colour, int(stream.frames or 0))


def refuse_interlaced(path: Path, field_order: str) -> None:
    if field_order in INTERLACED:
        raise VideoInputError(f"{path}: interlaced video (field order {field_order}): upscaling fields as "
                              "frames doubles their combing; deinterlace it first (video.deinterlace is "
                              "not built yet: e.g. ffmpeg -vf bwdif) and give the progressive file")


def frame_tensor(frame, bit_depth: int) -> torch.Tensor:
    """(3, h, w) float32 in [0, 1] of a PyAV VideoFrame, through 16-bit RGB when deeper than 8 bits."""
    if bit_depth > 8:
        samples = frame.to_ndarray(format="rgb48le").astype(np.float32) / 65535.0
    else:
        samples = frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
    return torch.from_numpy(samples).permute(2, 0, 1).contiguous()


def decode_video(info: VideoInfo, packets=None) -> Iterator[VideoFrame]:
    """The frames of `info`'s video stream in presentation order. `packets`: the demuxed packets of an
    open container to decode (others are skipped), else the file is opened here. A decode error
    mid-way ends with VideoInputError naming the frames decoded so far (those were yielded)."""
    av = av_module()
    owned = None
    if packets is None:
        owned = av.open(str(info.path))
        packets = owned.demux(owned.streams.video[0])
    index = 0
    try:
        for packet in packets:
            if packet.stream.index != info.stream_index:
                continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError as err:
                raise VideoInputError(f"{info.path}: the video cannot be decoded past frame {index} "
                                      f"({err}); the {index} frames before were processed") from err
            for frame in frames:
                if frame.interlaced_frame:
                    refuse_interlaced(info.path, "tt" if getattr(frame, "top_field_first", True) else "bb")
                pts = int(frame.pts if frame.pts is not None else index)
                yield VideoFrame(index, pts, frame_tensor(frame, info.bit_depth), bool(frame.is_corrupt))
                index += 1
    finally:
        if owned is not None:
            owned.close()


def checked_frame_count(info: VideoInfo, count: int) -> None:
    """VideoInputError for a video of fewer than two frames: nothing temporal to keep, and likely a still."""
    if count < 2:
        raise VideoInputError(f"{info.path}: the video has {count} frame(s); a video needs at least 2 "
                              "(upscale a still as an image with `op4ksr upscale`)")
