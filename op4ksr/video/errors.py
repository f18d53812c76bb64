"""The one-line errors a user gets for a sequence or a video that cannot be processed as given."""
from __future__ import annotations

from op4ksr.errors import UserError


class SequenceError(UserError):
    """A frame sequence with missing or duplicate frame numbers, or frames of mixed sizes or bit depths."""


class FrameFileError(UserError):
    """One frame file that cannot be read (truncated, not the format its extension says, unsupported)."""


class VideoInputError(UserError):
    """A video file that cannot be upscaled as given: no video stream, one frame, interlaced, undecodable."""
