"""Video files on Ray (`op4ksr video --ray`): one row per frame, chunks inside shots, the parts muxed into a
video with the input's frame count, timestamps and audio packets; a killed run resumed with every frame once."""
import json

import pytest

from actors.film import FilmChunkActor
from op4ksr.video.decode import av_module
from pipeline.run.film_run import run_film
from pipeline.storage import StorageSpec
from tests.pipeline.run.test_film_run import _rows, _spec, killed_mid_run
from tests.synthetic_video import frame_times, moving_texture, stream_packets, woven, write_video

CUT, FRAMES, SIZE = 5, 9, (32, 48)  # frame index 5 starts the second shot


def _clip(path, count=FRAMES, cut=CUT, size=SIZE):
    """Two unrelated panning textures (a hard cut at frame `cut`) in an mp4 with an AAC track."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, moving_texture(cut, size=size, seed=1) + moving_texture(count - cut, size=size, seed=7),
                audio_seconds=count / 24)


def _decoded(path):
    with av_module().open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)], dict(container.metadata)


class _FailsOnFrameFour(FilmChunkActor):
    """The model raises on the third frame of shot 0's second chunk, which runs frames 2 (its lead-in), 3, 4."""

    def __call__(self, batch):
        item = json.loads(batch.column("work")[0].as_py())
        self._calls, self._target = 0, item.get("kind") == "video" and (item["shot"], item["chunk"]) == (0, 1)
        return super().__call__(batch)

    def upscale(self, rgb, size):
        self._calls += 1
        if self._target and self._calls == 3:
            raise RuntimeError("out of memory on frame 4")
        return super().upscale(rgb, size)


def test_a_video_becomes_rows_per_frame_and_an_output_video_with_its_times_and_audio(tmp_path, ray_local):
    source = tmp_path / "in" / "reel" / "clip.mp4"
    _clip(source)
    inp, out = StorageSpec(str(tmp_path / "in")), StorageSpec(str(tmp_path / "out"))
    # flow: each chunk after a shot's first starts one frame early (a lead-in, decoded and run, not written)
    first = run_film(_spec(inp.uri, out.uri, "run-1", "video.temporal=flow"), _FailsOnFrameFour)
    # the video is written with frame 4 filled from bicubic (the part holds the fill), and says so
    assert first["failed"] == 1 and first["videos"][0] == {
        "video": "reel/clip.mp4", "frames": FRAMES, "missing": 0, "output": "videos/reel/clip.mkv",
        "filled_from_bicubic": [4], "streams_not_copied": [], "c2pa": "none", "c2pa_manifest": None}
    filled_video, _ = _decoded(tmp_path / "out" / "videos" / "reel" / "clip.mkv")
    fill_part, _ = _decoded(tmp_path / "out" / "runs/run-1/parts/reel/clip.mp4/f000003-000005.mkv")
    assert len(filled_video) == FRAMES and (filled_video[4] == fill_part[1]).all()  # the part's bicubic fill
    store = out.open()
    cuts = json.loads(store.get("runs/run-1/cuts/reel/clip.mp4.json"))
    assert cuts["cuts"] == [CUT] and cuts["shots"] == [[0, 4], [5, 8]]
    assert cuts["chunks"] == [[[0, 2], [2, 4]], [[5, 7], [7, 8]]]  # 3 frames overlapping by 1, never across 5
    shots = json.loads(store.get("runs/run-1/shots/reel/clip.mp4.json"))["shots"]  # the per-shot report, by index
    assert [(s["start"], s["end"], len(s["flicker_curve"])) for s in shots] == [(0, 5, 5), (5, 9, 4)]
    assert [f["frame"] for f in shots[0]["failed_frames"]] == [4] and shots[1]["failed_frames"] == []

    summary = run_film(_spec(inp.uri, out.uri, "run-2", "video.temporal=flow"), FilmChunkActor)
    assert summary["chunks"] == 1 and summary["due"] == 1 and summary["done"] == 1  # only frame 4 again
    rows = [r for r in _rows(store) if r["status"] == "done"]
    assert sorted(r["frame"] for r in rows) == list(range(FRAMES))  # each frame one done row
    assert {r["key"] for r in rows} == {"reel/clip.mp4"} and all(r["shot"] == (r["frame"] >= CUT) for r in rows)
    (video,) = summary["videos"]
    assert video["output"] == "videos/reel/clip.mkv" and video["missing"] == 0 and video["filled_from_bicubic"] == []

    target = tmp_path / "out" / "videos" / "reel" / "clip.mkv"
    assert not list(target.parent.glob("*.part*"))
    times, source_times = frame_times(target), frame_times(source)
    assert len(times) == FRAMES and times == pytest.approx(source_times, abs=1e-3)  # Matroska keeps milliseconds
    assert stream_packets(target, "audio") == stream_packets(source, "audio")
    frames, tags = _decoded(target)
    assert frames[0].shape == (2 * SIZE[0], 2 * SIZE[1], 3)
    assert tags["OP4KSR_MODEL_ID"] == rows[0]["model_id"] and tags["OP4KSR_PARAMS_HASH"] == rows[0]["params_hash"]
    # the parts are muxed losslessly in frame order: frame 3 from run-1's part of frames 3-4, frame 4 from run-2's
    part_keys = {r["frame"]: r["output_key"] for r in rows}
    assert part_keys[3] == "runs/run-1/parts/reel/clip.mp4/f000003-000005.mkv"
    assert part_keys[4] == "runs/run-2/parts/reel/clip.mp4/f000003-000005.mkv"
    for index in range(FRAMES):
        key = part_keys[index]
        part, _ = _decoded(tmp_path / "out" / key)
        assert (frames[index] == part[index - int(key[-17:-11])]).all()

    again = run_film(_spec(inp.uri, out.uri, "run-3", "video.temporal=flow"), FilmChunkActor)
    assert again["chunks"] == 0 and again["already_done"] == FRAMES and again["videos"][0]["already_written"]


def test_on_s3_an_interlaced_or_unreadable_video_is_one_refused_line_and_the_others_go_on(
        tmp_path, s3_server, s3_bucket, ray_local):
    local = tmp_path / "local"
    _clip(local / "good.mp4", count=3, cut=3)
    (local / "broken.mov").write_bytes(b"not a video")
    write_video(local / "woven.mp4", woven(moving_texture(4, size=SIZE)), interlaced=True)
    inp, out = f"s3://{s3_bucket}/clips/", f"s3://{s3_bucket}/remaster/"
    for path in sorted(local.iterdir()):
        s3_server.open_storage(inp).put_file(path.name, str(path))
    summary = run_film(_spec(inp, out, "run-1", s3=s3_server), FilmChunkActor)
    broken, interlaced = summary["refused"]
    assert "broken.mov" in broken and "\n" not in broken
    assert "woven.mp4: interlaced video" in interlaced and "--ray does not deinterlace" in interlaced
    assert summary["frames"] == 3 and summary["done"] == 3 and summary["chunks"] == 1
    assert summary["videos"] == [{"video": "good.mp4", "frames": 3, "missing": 0, "output": "videos/good.mkv",
                                  "filled_from_bicubic": [], "streams_not_copied": [], "c2pa": "none",
                                  "c2pa_manifest": None}]
    target = tmp_path / "good.mkv"
    s3_server.open_storage(out).get_file("videos/good.mkv", str(target))
    assert frame_times(target) == pytest.approx(frame_times(local / "good.mp4"), abs=1e-3)
    assert stream_packets(target, "audio") == stream_packets(local / "good.mp4", "audio")


@pytest.mark.slow
def test_a_killed_video_run_resumes_with_every_frame_once_and_the_video_whole(tmp_path, ray_local):
    count = 24
    source = tmp_path / "in" / "clip.mp4"
    _clip(source, count=count, cut=12, size=(48, 64))
    inp, out = StorageSpec(str(tmp_path / "in")), StorageSpec(str(tmp_path / "out"))
    store = out.open()
    before = killed_mid_run(inp, out)
    assert 0 < len(before) < count, "the kill did not land mid-run"
    assert not (tmp_path / "out" / "videos").exists()  # no video before every frame is done

    summary = run_film(_spec(inp.uri, out.uri, "resumed", "video.chunk_frames=2", "video.chunk_overlap=0"),
                       FilmChunkActor)
    done = sorted(r["frame"] for r in _rows(store) if r["status"] == "done")
    assert done == list(range(count))  # every frame exactly one done row
    assert summary["already_done"] == len(before) and summary["done"] == count - len(before)
    target = tmp_path / "out" / "videos" / "clip.mkv"
    assert frame_times(target) == pytest.approx(frame_times(source), abs=1e-3)  # whole: every frame, in order
    assert stream_packets(target, "audio") == stream_packets(source, "audio")
