"""A chunk of a video decoded by seeking to the keyframe before it, numbered by the plan's timestamps:
the same frames, bit for bit, as decoding from the first frame, for far fewer frames decoded."""
from __future__ import annotations

import pytest
import torch

from op4ksr.video.errors import VideoInputError
from op4ksr.video.seek import DecodeCount
from op4ksr.video.video_parts import chunk_frames, cut_scores
from tests.synthetic_video import moving_texture, write_video

pytest.importorskip("av")
FRAMES = 60


@pytest.fixture(scope="module", params=[("mpeg4", 0, "mp4"), ("mpeg4", 2, "mp4"), ("mpeg4", 0, "mkv")],
                ids=["mp4-ip", "mp4-ipb", "mkv-ip"])
def short_gops(request, tmp_path_factory):
    """A 60-frame clip with a keyframe every 4 frames (B-frames too in mp4-ipb), planned."""
    codec, b_frames, suffix = request.param
    path = tmp_path_factory.mktemp("seek") / f"gop4-b{b_frames}.{suffix}"
    write_video(path, moving_texture(FRAMES, size=(32, 48)), codec=codec, gop=4, b_frames=b_frames)
    info, scores, pts, _ = cut_scores(path)
    assert len(scores.scores) == FRAMES and len(pts) == FRAMES
    return info, pts


def _chunk(info, pts, start, end, seek=True):
    count = DecodeCount()
    frames = list(chunk_frames(info, start, end, pts[start:end] if seek else None, count))
    return frames, count


@pytest.mark.parametrize("start,end", [(5, 11), (30, 37), (51, 60), (0, 3)])
def test_a_seeked_chunk_equals_decoding_from_the_start(short_gops, start, end):
    info, pts = short_gops
    seeked, seek_count = _chunk(info, pts, start, end)
    full, full_count = _chunk(info, pts, start, end, seek=False)
    assert seek_count.seeked and not full_count.seeked
    assert [f.index for f in seeked] == [f.index for f in full] == list(range(start, end))
    assert [f.pts for f in seeked] == [f.pts for f in full] == pts[start:end]
    for a, b in zip(seeked, full):
        assert torch.equal(a.rgb, b.rgb)
    # from a keyframe at most 4 frames before `start`, plus the first frame of each seek retried earlier
    # (with B-frames MP4 seeks by decode time and can land past the chunk: op4ksr.video.seek)
    assert seek_count.decoded <= (end - start) + 8
    assert full_count.decoded >= end


def test_a_late_chunk_decodes_far_fewer_frames(short_gops):
    info, pts = short_gops
    _, seek_count = _chunk(info, pts, 54, 58)
    _, full_count = _chunk(info, pts, 54, 58, seek=False)
    assert seek_count.decoded <= 8 < 58 <= full_count.decoded


def test_a_timestamp_the_plan_does_not_hold_is_one_error(short_gops):
    info, pts = short_gops
    wrong = list(pts[20:26])
    wrong[3] -= 1  # the plan's frame 23 has a pts no frame of the file has
    with pytest.raises(VideoInputError, match=r"frame 23 \(pts \d+\) is missing after seeking"):
        list(chunk_frames(info, 20, 26, wrong))
    extra = pts[20:23] + pts[24:27]  # the plan skips the file's frame 23
    with pytest.raises(VideoInputError, match=r"which the plan does not hold, decoded before frame 23"):
        list(chunk_frames(info, 20, 26, extra))


def test_timestamps_that_name_no_single_frame_decode_from_the_start(short_gops):
    info, pts = short_gops
    count = DecodeCount()
    frames = list(chunk_frames(info, 40, 42, [pts[40], pts[40]], count))
    assert not count.seeked and count.decoded >= 42 and [f.index for f in frames] == [40, 41]
