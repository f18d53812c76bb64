"""VideoSettings: how `op4ksr video` cuts, chunks, measures and writes (video.*; built by jobs/specs.py).

Torch-free, so the config rules can read the choices (the Literals) without loading torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TemporalMode = Literal["none", "flow"]  # video.temporal: "flow" is op4ksr.video.fusion
DeinterlaceMode = Literal["refuse", "bwdif", "yadif"]  # video.deinterlace: op4ksr.video.deinterlace
FieldOrder = Literal["auto", "tff", "bff"]  # video.field_order: auto = the stream's, else each frame's flag
ExrTransfer = Literal["srgb", "none"]  # video.exr_transfer: op4ksr.video.exr


@dataclass(frozen=True, kw_only=True)
class VideoSettings:
    cut_threshold: float = 0.4
    chunk_frames: int = 48
    chunk_overlap: int = 8
    flicker_threshold: float = 0.01
    codec: str = "ffv1"
    measure_flow: bool = True
    temporal: TemporalMode = "none"
    temporal_weight: float = 0.5
    deinterlace: DeinterlaceMode = "refuse"
    field_order: FieldOrder = "auto"
    exr_transfer: ExrTransfer = "srgb"
