"""`op4ksr video` end to end with the shipped tiny model: a video with sound, and a folder of sequences."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.cli import main as cli
from op4ksr.images import png16
from tests.synthetic_video import frame_times, moving_texture, stream_packets, woven, write_video

pytest.importorskip("av")
pytest.importorskip("cv2")


@pytest.mark.slow
def test_video_with_sound_becomes_an_ffv1_master_and_a_shot_report(tmp_path, capsys):
    source = tmp_path / "clip.mp4"
    write_video(source, moving_texture(4, seed=1) + moving_texture(3, seed=2, step=(1, 0)), audio_seconds=0.3)
    from op4ksr.provenance.throwaway_identity import make_test_identity
    from op4ksr.provenance.verify import verify_output

    identity = make_test_identity(tmp_path / "identity")
    assert cli(["video", str(source), "--out", str(tmp_path / "out"), "--scale", "2",
                f"provenance.cert_chain={identity.cert_chain}", f"provenance.private_key={identity.private_key}"]) == 0
    target = tmp_path / "out" / "clip.mkv"
    report = json.loads((tmp_path / "out" / "clip.mkv.shots.json").read_text())
    assert report["frames"] == 7 and report["cuts"] == [4] and report["size"] == [96, 128]
    assert report["c2pa"] == "sidecar"  # Matroska: the manifest beside it, bound to every byte
    assert verify_output(str(target), target.read_bytes(), "video/x-matroska",
                         sidecar=(tmp_path / "out" / "clip.mkv.c2pa").read_bytes(),
                         trust_anchors_pem=identity.trust_anchor.read_text()).ok
    assert len(frame_times(target)) == 7
    assert stream_packets(target, "audio") == stream_packets(source, "audio")
    import av

    import op4ksr

    with av.open(str(target)) as out:  # the model that made it, as the tiny model's images say (its model id)
        assert out.metadata["OP4KSR_VERSION"] == op4ksr.__version__ and out.metadata["OP4KSR_MODEL_ID"]
        assert out.metadata["DIGITAL_SOURCE_TYPE"].endswith("compositeWithTrainedAlgorithmicMedia")
    for shot in report["shots"]:  # the tiny model's warping error is measured against bicubic's
        assert shot["warping_error_vs_bicubic"] > 0 and len(shot["flicker_curve"]) == shot["end"] - shot["start"]
    assert "7 frames, 2 shots, 0 failed" in capsys.readouterr().err
    from PIL import Image

    assert Image.open(tmp_path / "out" / "clip.mkv.profile.png").size == (128, 7)  # a row of each output frame
    assert Image.open(tmp_path / "out" / "clip.mkv.shots.png").format == "PNG"


@pytest.mark.slow
def test_interlaced_video_is_deinterlaced_when_asked_and_the_command_says_so(tmp_path, capsys):
    source = tmp_path / "tv.mkv"
    write_video(source, woven(moving_texture(8, step=(0, 4), seed=12)), interlaced=True)  # mpeg4, field order tt
    target = tmp_path / "tv_2x.mkv"
    assert cli(["video", str(source), "--out", str(target), "--scale", "2", "video.deinterlace=bwdif"]) == 0
    assert f"deinterlaced: {source}: bwdif, field order tff (the stream says field order tt)" in capsys.readouterr().err
    report = json.loads((tmp_path / "tv_2x.mkv.shots.json").read_text())
    assert report["deinterlace"]["combed_frames_after"] == 0 and report["frames"] == 4
    assert len(frame_times(target)) == 4


def test_sequences_folder_keeps_names_and_16_bits_and_refuses_a_gapped_one(tmp_path, capsys):
    src = tmp_path / "scans"
    (src / "reel1").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in (7, 8, 9):
        samples = rng.integers(0, 65536, (16, 24, 3)).astype(np.uint16)
        (src / "reel1" / f"shot.{n:04d}.png").write_bytes(png16.write_png(samples))
    for n in (1, 3):
        (src / f"gap.{n:04d}.png").write_bytes(png16.write_png(np.zeros((16, 24, 3), np.uint16)))
    status = cli(["video", str(src), "--out", str(tmp_path / "out"), "--scale", "2"])
    err = capsys.readouterr().err
    assert status == 1 and "refused: sequence" in err and "1 frames missing: 2" in err
    out = tmp_path / "out" / "reel1"
    assert sorted(p.name for p in out.glob("shot.[0-9]*.png")) == ["shot.0007.png", "shot.0008.png", "shot.0009.png"]
    assert (out / "shot.profile.png").is_file() and (out / "shot.shots.png").is_file()
    header = png16.header((out / "shot.0008.png").read_bytes())
    assert header[:3] == (48, 32, 16)  # width, height, bit depth
    assert json.loads((out / "shot.shots.json").read_text())["first_frame"] == 7
    written = (out / "shot.0008.png").stat().st_mtime_ns
    assert cli(["video", str(src), "--out", str(tmp_path / "out"), "--scale", "2"]) == 1  # the gap is still refused
    assert "3 frames, 3 shots, 3 kept from an earlier run" in capsys.readouterr().err  # noise frames: all cuts
    assert (out / "shot.0008.png").stat().st_mtime_ns == written  # kept, not written again


def test_bad_video_settings_are_one_line(tmp_path, capsys):
    source = tmp_path / "clip.mkv"
    write_video(source, moving_texture(2), codec="ffv1")
    assert cli(["video", str(source), "--out", str(tmp_path / "o.mkv"), "video.chunk_overlap=25"]) == 2
    assert "video.chunk_overlap=25 must be at most half of video.chunk_frames=48" in capsys.readouterr().err
    assert cli(["video", str(source), "--out", str(tmp_path / "o.mkv"), "video.deinterlace=weave"]) == 2
    assert "video.deinterlace='weave' is not one of refuse, bwdif, yadif" in capsys.readouterr().err
    assert cli(["video", str(source), "--out", str(tmp_path / "o.mkv"), "video.exr_transfer=log"]) == 2
    assert "video.exr_transfer='log' is not one of srgb, none" in capsys.readouterr().err
    assert cli(["video", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o.mkv")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert cli(["video", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "is inside the input folder" in capsys.readouterr().err


def test_the_deinterlace_and_exr_keys_reach_the_video_settings():
    from jobs.config import load_config
    from jobs.specs import video_settings

    assert (video_settings(load_config()).deinterlace, video_settings(load_config()).exr_transfer) == ("refuse", "srgb")
    settings = video_settings(load_config([], ["video.deinterlace=yadif", "video.field_order=bff",
                                               "video.exr_transfer=none"]))
    assert (settings.deinterlace, settings.field_order, settings.exr_transfer) == ("yadif", "bff", "none")
