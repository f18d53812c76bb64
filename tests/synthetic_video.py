"""Synthetic footage with known facts: a texture moving at a known speed, a hard cut, injected flicker,
and small video files (mp4 with an AAC track) written with PyAV. Frames are (3, h, w) float32 in [0, 1]."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from tests.synthetic_images import smooth_field


def moving_texture(frames: int, size: tuple[int, int] = (48, 64), step: tuple[int, int] = (1, 2),
                   seed: int = 0) -> list[torch.Tensor]:
    """A textured scene panning by `step` = (dy, dx) whole pixels a frame: frame t is the window at t*step."""
    dy, dx = step
    field = smooth_field((size[0] + abs(dy) * frames, size[1] + abs(dx) * frames), seed=seed, beta=2.0)[0]
    out = []
    for t in range(frames):
        top = t * dy if dy >= 0 else abs(dy) * (frames - 1 - t)
        left = t * dx if dx >= 0 else abs(dx) * (frames - 1 - t)
        out.append(field[:, top:top + size[0], left:left + size[1]].contiguous())
    return out


def with_flicker(frames: list[torch.Tensor], gains: dict[int, float]) -> list[torch.Tensor]:
    """`frames` with frame t's brightness multiplied by gains[t] (a one-frame flicker)."""
    return [(f * gains.get(t, 1.0)).clamp(0, 1) for t, f in enumerate(frames)]


def woven(frames: list[torch.Tensor]) -> list[torch.Tensor]:
    """Interlaced frames from progressive ones: even lines (top field) from frame 2t, odd lines from 2t+1."""
    out = []
    for first, second in zip(frames[::2], frames[1::2]):
        frame = first.clone()
        frame[:, 1::2] = second[:, 1::2]
        out.append(frame)
    return out


def write_video(path: Path, frames: list[torch.Tensor], *, fps: int = 24, codec: str = "mpeg4",
                pts: list[int] | None = None, time_base: Fraction | None = None, audio_seconds: float = 0.0,
                interlaced: bool = False, colour: dict | None = None, gop: int | None = None,
                b_frames: int = 0) -> None:
    """A small video file of `frames`, optionally with a 440 Hz AAC track, explicit (VFR) timestamps and
    colour tags (`colour`: codec-context attribute -> FFmpeg's integer, e.g. {"color_primaries": 1}); `gop`:
    a keyframe every `gop` frames, `b_frames`: at most that many B-frames in a row (decode order != presentation)."""
    import av

    time_base = time_base or Fraction(1, fps * 100)
    pts = pts or [round(t / fps / time_base) for t in range(len(frames))]
    h, w = frames[0].shape[-2:]
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.codec_context.time_base = time_base
        video.codec_context.options = {"qscale": "2"} if codec == "mpeg4" else {}
        if gop:
            video.codec_context.gop_size = gop
        if b_frames:
            video.codec_context.max_b_frames = b_frames
        if interlaced:
            video.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
            video.codec_context.field_order = 2  # AV_FIELD_TT
        for key, value in (colour or {}).items():
            setattr(video.codec_context, key, value)
        audio = out.add_stream("aac", rate=16000) if audio_seconds else None
        for t, frame in enumerate(frames):
            image = (frame.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            vf = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            vf.pts, vf.time_base = pts[t], time_base
            out.mux(video.encode(vf))
        out.mux(video.encode(None))
        if audio is not None:
            _write_tone(out, audio, audio_seconds)


def _write_tone(out, audio, seconds: float) -> None:
    import av

    rate, block = 16000, 1024
    samples = np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate).astype(np.float32) * 0.3
    for start in range(0, len(samples), block):
        chunk = samples[start:start + block]
        frame = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        out.mux(audio.encode(frame))
    out.mux(audio.encode(None))


def write_audio_only(path: Path, seconds: float = 0.5) -> None:
    import av

    with av.open(str(path), "w") as out:
        _write_tone(out, out.add_stream("aac", rate=16000), seconds)


def stream_packets(path: Path, kind: str) -> list[tuple[float | None, bytes]]:
    """(time in seconds, bytes) of every packet of the first `kind` stream of a file."""
    import av

    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [(None if p.pts is None else float(p.pts * p.time_base), bytes(p))
                for p in container.demux(stream) if p.size]


def frame_times(path: Path) -> list[float]:
    """Presentation time in seconds of every decoded video frame, in order."""
    import av

    with av.open(str(path)) as container:
        return [float(f.pts * f.time_base) for f in container.decode(video=0)]
