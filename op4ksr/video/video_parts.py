"""A video file upscaled in parts: its cuts, one chunk's frames decoded, a lossless part, and the parts muxed.

What a fleet run of a video file (`op4ksr video IN --ray`) needs from the library; nothing here knows
of storage or Ray. The driver finds the cuts (cut_scores, the local path's first pass without a
deinterlacer: interlaced video is refused on the fleet), a worker decodes the frames of its chunk
(chunk_frames: seek to the keyframe before it and number frames by the pts the driver recorded,
op4ksr.video.seek, or decode from the start and skip where seeking cannot; either way the frame
numbering is exactly the driver's) and writes its outputs as a part (PartWriter: FFV1 in Matroska at the video's bit depth, so the codes
the final writer stores come back unchanged), and assemble_video decodes the source once more for
each frame's timestamp, takes the outputs from the parts in frame order, and writes the output as
the local path does: VideoWriter with the other streams copied and the provenance tags, under a
`.part` name renamed when whole.
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import torch

from op4ksr.video import decode
from op4ksr.video.encode import VideoWriter
from op4ksr.video.errors import VideoInputError
from op4ksr.video.first_pass import FirstPass, first_pass
from op4ksr.video.interlace import COMB_RATIO
from op4ksr.video.provenance_tags import sign_video, video_lineage
from op4ksr.video.seek import DecodeCount, SeekImpossible, seek_chunk_frames
from op4ksr.video.shots import CutScores

PART_RATE = Fraction(25)  # a part's own frame rate: its times are never read, only its frame order


def cut_scores(path: Path) -> tuple[decode.VideoInfo, CutScores, list[int], str | None]:
    """The video's facts, every frame's cut score, every frame's pts (in the stream's time base: what a
    worker seeks by, op4ksr.video.seek) and the decode error that ended the pass early (None if
    none). VideoInputError (one line) for an unusable video, one of fewer than 2 frames, or an
    interlaced one (said by the stream, flagged on frames or measured combed): the fleet does not
    deinterlace, the local path does."""
    info = decode.probe(path, allow_interlaced=True)
    why = f"the stream says field order {info.field_order}" if info.field_order in decode.INTERLACED else None
    measured = first_pass(info) if why is None else FirstPass()
    scores, combs, flagged, pts = measured.scores, measured.combs, measured.flagged, measured.pts
    if why is None and (flagged or combs.interlaced):
        why = (f"{flagged} frames flagged interlaced" if flagged else
               f"{combs.combed} of {combs.frames} frames combed, comb score over {COMB_RATIO}")
    if why is not None:
        raise VideoInputError(f"{path}: interlaced video ({why}); --ray does not deinterlace: run it without "
                              "--ray (op4ksr video FILE video.deinterlace=bwdif)")
    decode.checked_frame_count(info, len(scores.scores))
    return info, scores, pts, measured.decode_error


def chunk_frames(info: decode.VideoInfo, start: int, end: int, pts: list[int] | None = None,
                 count: DecodeCount | None = None) -> Iterator[decode.VideoFrame]:
    """Frames `start` .. `end - 1` (0-based, presentation order, numbered as cut_scores numbers them).
    With `pts` (the plan's timestamps of these frames) decoded from the keyframe at or before `start`
    (op4ksr.video.seek); without them, or where seeking cannot give them, decoded from the first frame
    and the earlier ones skipped. `count` says which, and how many frames were decoded.
    VideoInputError if the video ends before `end`."""
    count = count if count is not None else DecodeCount()
    if pts is not None:
        if len(pts) != end - start:
            raise ValueError(f"{len(pts)} timestamps for frames {start} .. {end - 1}")
        try:
            yield from seek_chunk_frames(info, start, pts, count)
            return
        except SeekImpossible:
            pass  # nothing was given yet: decode from the first frame
    count.seeked, count.decoded, expected = False, 0, start
    for frame in decode.decode_video(info, refuse_interlaced=False):
        count.decoded += 1
        if frame.index < start:
            continue
        if frame.index >= end:
            break
        expected += 1
        yield frame
    if expected < end:
        raise VideoInputError(f"{info.path}: decoded {expected} frames, the plan needs frame {end - 1}")


class PartWriter(VideoWriter):
    """A chunk's output frames, in order, as FFV1 in Matroska at the video's bit depth: lossless for the
    codes VideoWriter stores (the same quantisation), no other stream and no provenance."""

    def __init__(self, path: Path, info: decode.VideoInfo, size: tuple[int, int]):
        part = dataclasses.replace(info, time_base=1 / PART_RATE, average_rate=PART_RATE, colour={})
        super().__init__(path, part, None, size, "ffv1")

    def add(self, rgb: torch.Tensor) -> None:
        self.write(rgb, self.frames_written)


def part_outputs(path: Path, bit_depth: int) -> Iterator[torch.Tensor]:
    """The frames of a part (PartWriter) as (3, H, W) tensors, in order."""
    with decode.av_module().open(str(path)) as container:
        for frame in container.decode(video=0):
            yield decode.frame_tensor(frame, bit_depth)


def split_packets(container, video_index: int, writer: VideoWriter):
    """The video stream's packets, in file order; every other stream's packets go to `writer` unchanged."""
    for packet in container.demux():
        if packet.stream.index == video_index:
            yield packet
        else:
            writer.copy_packet(packet)


def assemble_video(source: Path, target: Path, outputs: Iterator[torch.Tensor], frames: int,
                   size: tuple[int, int], codec: str, provenance: dict | None, signer=None,
                   embed: bool = True) -> dict:
    """Write `target`: the `frames` outputs (in frame order) at their source frames' timestamps, the
    source's audio, subtitle and data streams copied, the provenance tags of `provenance` (version,
    model_id, params_hash); under `<stem>.part<ext>`, renamed when whole. With a `signer` (a
    ManifestSigner) and `provenance`, its C2PA manifest as the local path signs (remaster_video):
    embedded in MOV/MP4 (and `embed`), else in the `<target>.c2pa` sidecar. What the report says of it."""
    info = decode.probe(source, allow_interlaced=True)
    partial = target.with_name(f"{target.stem}.part{target.suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with decode.av_module().open(str(source)) as container:
        lineage = video_lineage(source, provenance, (info.height, info.width), size) if provenance else None
        writer = VideoWriter(partial, info, container, size, codec, lineage)
        try:
            packets = split_packets(container, info.stream_index, writer)
            for frame in decode.decode_video(info, packets, refuse_interlaced=False):
                if frame.index < frames:  # past them only the other streams' packets are still copied
                    writer.write(next(outputs), frame.pts)
                    written += 1
        except VideoInputError:
            pass  # a video that stops decoding half-way: the plan's frames are those before (checked below)
        finally:
            writer.close()
    if written != frames:
        partial.unlink(missing_ok=True)
        raise VideoInputError(f"{source}: decoded {written} frames to mux, the plan has {frames}")
    signed = {"c2pa": "none"}
    if signer is not None and lineage is not None:  # before the rename: a target that exists is signed too
        signed = sign_video(signer, partial, source, lineage, Path(f"{target}.c2pa"), embed)
    partial.replace(target)
    return {"frames": written, "time_base": str(info.time_base), "streams_not_copied": writer.not_copied, **signed}
