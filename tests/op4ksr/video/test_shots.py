"""Cuts found weight-free at the exact frame; flicker and motion are not cuts; chunks never cross a cut."""
from __future__ import annotations

import pytest

from op4ksr.video.shots import Shot, chunk_shot, find_cuts, global_shift, luma_thumbnail, shots_from_cuts
from tests.synthetic_video import moving_texture, with_flicker


def _thumbs(frames):
    return [luma_thumbnail(f) for f in frames]


def test_hard_cut_is_found_at_its_frame_and_nowhere_else():
    first = with_flicker(moving_texture(7, step=(1, 2), seed=1), {3: 1.1})  # motion and a 10% flicker
    second = moving_texture(5, step=(0, -1), seed=2)  # another scene of the same kind of texture
    cuts, scores = find_cuts(_thumbs(first + second), threshold=0.4)
    assert cuts == [7]
    assert max(s for t, s in enumerate(scores) if t != 7) < 0.3 and scores[7] > 0.6


def test_a_cut_between_scenes_of_the_same_tones_is_found_by_its_edges():
    first, second = moving_texture(3, seed=4), moving_texture(3, seed=5)
    cuts, scores = find_cuts(_thumbs(first + second), threshold=0.4)
    assert cuts == [3]


def test_a_pan_is_undone_by_the_global_shift():
    a, b = _thumbs(moving_texture(2, step=(1, 2), seed=3))
    assert global_shift(a, b) == (1, 2)


def test_chunks_overlap_inside_a_shot_and_never_straddle_a_cut():
    shots = shots_from_cuts([40, 45], 130)
    assert shots == [Shot(0, 40), Shot(40, 45), Shot(45, 130)]
    for shot in shots:
        chunks = chunk_shot(shot, chunk_frames=30, overlap=6)
        assert chunks[0].start == shot.start and chunks[-1].end == shot.end
        assert all(shot.start <= c.start < c.end <= shot.end and c.length <= 30 for c in chunks)
        assert all(b.start == a.end - 6 for a, b in zip(chunks, chunks[1:]))
    assert chunk_shot(Shot(45, 130), 30, 6) == [Shot(45, 75), Shot(69, 99), Shot(93, 123), Shot(117, 130)]


def test_bad_chunking_and_thresholds_are_refused():
    with pytest.raises(ValueError, match="overlap < chunk_frames"):
        chunk_shot(Shot(0, 10), 4, 4)
    with pytest.raises(ValueError, match="cut threshold"):
        find_cuts([], 0.0)
