"""The output video: upscaled frames encoded with the source's timestamps, every other stream copied.

Default codec: FFV1 (lossless, the archives' choice) storing the model's RGB as it is, at the
source's bit depth (bgr0 for 8 bits, gbrpNNle above), so no colour matrix touches the pixels; the
stream says colorspace RGB and keeps the source's primaries, transfer and range. Another codec
(`codec=`) gets frames in its first pixel format, converted by FFmpeg with the source's matrix.
Audio, subtitle and data streams are remuxed packet for packet (the bytes are not touched).
Given a Lineage, the file carries its provenance as tags and, in Matroska, an XMP attachment
(op4ksr.video.provenance_tags).
Each output frame carries its source frame's presentation timestamp in the source's time base;
Matroska stores milliseconds, so there times match the source's to the millisecond (use .mov for
the source's exact time base).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from op4ksr.provenance.lineage import Lineage
from op4ksr.video import provenance_tags
from op4ksr.video.decode import VideoInfo, av_module
from op4ksr.video.errors import VideoInputError

FFV1_FORMATS = {8: "bgr0", 10: "gbrp10le", 12: "gbrp12le", 16: "gbrp16le"}
RGB_COLORSPACE = 0  # AVCOL_SPC_RGB
COPIED_KINDS = ("audio", "subtitle", "data")


def ffv1_format(bit_depth: int) -> str:
    return FFV1_FORMATS[min((d for d in FFV1_FORMATS if d >= bit_depth), default=16)]


def check_encoder(codec: str) -> None:
    """VideoInputError (one line) unless this FFmpeg build can encode video with `codec`."""
    av = av_module()
    try:
        found = av.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError) as err:
        raise VideoInputError(f"video.codec={codec}: this FFmpeg build has no such encoder "
                              "(ffv1 is the lossless default)") from err
    if found.type != "video":
        raise VideoInputError(f"video.codec={codec} is an encoder of {found.type}, not of video")


class VideoWriter:
    """Writes the upscaled video stream of `info` to `path` beside copies of `source`'s other streams."""

    def __init__(self, path: Path, info: VideoInfo, source, size: tuple[int, int], codec: str = "ffv1",
                 lineage: Lineage | None = None):
        """`source`: the open input container whose other streams are copied; `size`: (H, W) of the output;
        `lineage`: the provenance the file carries (tags, and an XMP attachment where the container has room).
        `source` None: no stream to copy (a fleet run's lossless part, op4ksr.video.video_parts)."""
        self.av = av_module()
        check_encoder(codec)
        self.info, self.codec = info, codec
        # keep the source's times as they are (an AAC track may start before 0): no shift of every stream
        options = {"avoid_negative_ts": "disabled", **(provenance_tags.muxer_options(path) if lineage else {})}
        self.output = self.av.open(str(path), "w", options=options)
        self.video = self.output.add_stream(codec, rate=info.average_rate or Fraction(24))
        ctx = self.video.codec_context
        ctx.height, ctx.width = size
        ctx.time_base = info.time_base
        self.video.time_base = info.time_base
        if codec == "ffv1":
            ctx.pix_fmt = ffv1_format(info.bit_depth)
            ctx.options = {"level": "3", "slicecrc": "1"}  # FFV1 version 3: per-slice CRCs for archives
        else:
            ctx.pix_fmt = self.video.codec_context.codec.video_formats[0].name
        for key in ("color_primaries", "color_trc", "color_range"):
            if info.colour.get(key):
                setattr(ctx, key, info.colour[key])
        ctx.colorspace = RGB_COLORSPACE if codec == "ffv1" else info.colour.get("colorspace", 0)
        self.copied = {}  # input stream index -> output stream
        self.not_copied: list[str] = []  # streams this container cannot carry, named for the report
        for stream in source.streams if source is not None else ():
            if stream.type not in COPIED_KINDS:
                continue
            try:
                self.copied[stream.index] = self.output.add_stream_from_template(stream)
            except (ValueError, self.av.error.FFmpegError) as err:  # e.g. a MOV timecode track in Matroska
                self.not_copied.append(f"stream {stream.index} ({stream.type}, {stream.codec_context.name}): {err}")
        if lineage is not None:
            self._label(path, lineage)
        self.frames_written = 0

    def _label(self, path: Path, lineage: Lineage) -> None:
        """Provenance tags on the file and the video track, and the XMP attachment (before the header)."""
        self.output.metadata.update(provenance_tags.file_tags(lineage))
        self.video.metadata.update(provenance_tags.video_stream_tags(lineage))
        attachment = provenance_tags.xmp_attachment(path, lineage)
        if attachment is not None:
            self.output.add_attachment(*attachment)

    def copy_packet(self, packet) -> None:
        """Remux one packet of a copied stream unchanged (flush packets without data are dropped)."""
        out = self.copied.get(packet.stream.index)
        if out is None or packet.dts is None and packet.pts is None or packet.size == 0:
            return
        packet.stream = out
        self.output.mux(packet)

    def write(self, rgb: torch.Tensor, pts: int) -> None:
        """Encode one output frame (3, H, W) in [0, 1] at the source's `pts`."""
        frame = self._frame(rgb)
        frame.pts, frame.time_base = pts, self.info.time_base
        self.output.mux(self.video.encode(frame))
        self.frames_written += 1

    def _frame(self, rgb: torch.Tensor):
        samples = rgb.detach().float().clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, 3)
        fmt = self.video.codec_context.pix_fmt
        if self.codec == "ffv1" and fmt.startswith("gbrp"):
            depth = int(fmt[4:6])
            codes = (samples * ((1 << depth) - 1) + 0.5).astype(np.uint16)
            return self.av.VideoFrame.from_ndarray(np.ascontiguousarray(codes), format=fmt)
        frame = self.av.VideoFrame.from_ndarray((samples * 255 + 0.5).astype(np.uint8), format="rgb24")
        if self.codec != "ffv1":
            frame.colorspace = self.info.colour.get("colorspace", 0) or frame.colorspace
        return frame

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        self.output.mux(self.video.encode(None))
        self.output.close()
