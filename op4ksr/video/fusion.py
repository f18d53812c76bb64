"""`video.temporal: flow`: the previous output, moved along the flow, blended into the current one.

Training-free, in the manner of Upscale-A-Video's flow-guided propagation: for frame t, the fused
output of frame t-1 is warped onto t with the flow of the bicubic upscales (op4ksr.video.temporal
.FlowPair) and mixed in with weight `weight` where the flow is trusted: forward-backward
consistent, inside the frame, and where the warped bicubic t-1 matches bicubic t to within
`tolerance` (so a disocclusion, a lighting change or a flow error keeps the per-frame output).
Because the previous output is itself fused, detail that flickers from frame to frame is averaged
along motion over a few frames (a recursive filter: weight 0.5 halves a one-frame jump). Nothing
crosses a cut: the fusion starts again with each shot.

Within a shot it also starts again with each chunk (op4ksr.video.shots.chunk_shot), as it would
on a fleet where chunks of one long shot go to different actors; over the frames two chunks
share, the older chunk's fused output fades linearly into the newer one's (ChunkedFusion). So
the output does not depend on where the work ran, and a long shot has no seam at a chunk's start.
"""
from __future__ import annotations

import numpy as np
import torch

from op4ksr.video.temporal import FlowPair

class FlowFusion:
    """Fuses one shot's outputs frame by frame, in order."""

    def __init__(self, weight: float = 0.5, tolerance: float = 0.04):
        if not 0 <= weight < 1:
            raise ValueError(f"temporal weight must be in [0, 1), got {weight}")
        self.weight, self.tolerance = weight, tolerance
        self._previous: tuple[np.ndarray, np.ndarray] | None = None  # (fused output, bicubic) of frame t-1
        self.pair: FlowPair | None = None  # the flow of the last frame pair, for the meter to reuse

    def apply(self, output: torch.Tensor, bicubic: torch.Tensor, already_fused: bool = False,
              pair: FlowPair | None = None) -> torch.Tensor:
        """The fused output of this frame (3, H, W), from its own output and bicubic upscale; `already_fused`:
        `output` is already this frame's fused output (read back on a resumed run), kept as it is; `pair`:
        the flow from the previous bicubic frame to this one, if another fusion already computed it."""
        out = np.ascontiguousarray(output.float().clamp(0, 1).permute(1, 2, 0).numpy())
        bic = np.ascontiguousarray(bicubic.float().clamp(0, 1).permute(1, 2, 0).numpy())
        result = out
        self.pair = None
        if self._previous is not None:
            prev_fused, prev_bic = self._previous
            self.pair = pair or FlowPair(prev_bic, bic)
        if self.pair is not None and not already_fused:
            agrees = np.abs(self.pair.warp(prev_bic) - bic).mean(-1) < self.tolerance
            mask = (self.pair.valid & agrees)[..., None].astype(np.float32) * self.weight  # (H, W, 1)
            result = (out * (1 - mask) + self.pair.warp(prev_fused) * mask).astype(np.float32)
        self._previous = (result, bic)
        return torch.from_numpy(np.ascontiguousarray(result)).permute(2, 0, 1).contiguous()


class ChunkedFusion:
    """FlowFusion over one shot's chunks: each chunk fused from its own start, overlaps cross-faded."""

    def __init__(self, chunks: list, weight: float = 0.5):
        """`chunks`: the shot's chunks (start, end) in order, each overlapping the next by less than half."""
        self.chunks, self.weight = chunks, weight
        self.active: dict[int, FlowFusion] = {}  # chunk number -> its fusion, for the chunks the frame is in
        self.pair: FlowPair | None = None

    def apply(self, index: int, output: torch.Tensor, bicubic: torch.Tensor, already_fused: bool = False) -> torch.Tensor:
        """The output of frame `index` (frames in order): its chunk's fused output, or over an overlap the
        older chunk's fading linearly into the newer one's."""
        inside = [n for n, c in enumerate(self.chunks) if c.start <= index < c.end]
        self.active = {n: self.active.get(n) or FlowFusion(self.weight) for n in inside}
        self.pair, fused = None, []
        for n in inside:
            fused.append(self.active[n].apply(output, bicubic, already_fused, pair=self.pair))
            self.pair = self.pair or self.active[n].pair
        if len(fused) == 1 or already_fused:
            return fused[-1]
        older, newer = self.chunks[inside[0]], self.chunks[inside[-1]]
        w = (index - newer.start + 1) / (older.end - newer.start + 1)  # 0 < w < 1 over the overlap
        return (1 - w) * fused[0] + w * fused[-1]
