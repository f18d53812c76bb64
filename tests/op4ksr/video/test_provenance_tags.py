"""An output video says what made it: Matroska tags and an XMP attachment, QuickTime keys in MOV, read back
by PyAV and by exiftool (a reader independent of ours); the copied audio is untouched and unlabelled."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from op4ksr.provenance.lineage import GENERATIVE, source_type_uri
from op4ksr.video.remaster import VideoSettings, remaster_video
from tests.synthetic_video import moving_texture, stream_packets, write_video

av = pytest.importorskip("av")
pytest.importorskip("cv2")
EXIFTOOL = shutil.which("exiftool")
PROVENANCE = {"version": "0.1.0", "model_id": "preset:tiny:seed0", "params_hash": "0123456789abcdef"}
LABEL = source_type_uri(GENERATIVE)
SETTINGS = VideoSettings(measure_flow=False)


def _identity(rgb, size):
    return rgb.clone()


def _exiftool(data: bytes) -> dict:
    assert EXIFTOOL, "exiftool is missing: make test installs Debian's libimage-exiftool-perl"
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-struct", "-"], input=data, capture_output=True, check=True)
    return json.loads(out.stdout)[0]


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "reel.mp4"
    write_video(path, moving_texture(3, seed=4), audio_seconds=0.3)
    return path


def test_matroska_carries_the_label_and_lineage_as_tags_and_an_xmp_attachment(tmp_path, source):
    target = tmp_path / "out.mkv"
    remaster_video(source, target, _identity, lambda h, w: (h, w), SETTINGS, provenance=PROVENANCE)
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    with av.open(str(target)) as out:
        tags = dict(out.metadata)
        video, audio = out.streams.video[0], out.streams.audio[0]
        (attachment,) = out.streams.attachments
        assert (attachment.name, attachment.mimetype) == ("op4ksr.xmp", "application/rdf+xml")
        xmp = bytes(attachment.data)
        assert video.metadata["DIGITAL_SOURCE_TYPE"] == LABEL and "DIGITAL_SOURCE_TYPE" not in audio.metadata
    assert (tags["OP4KSR_VERSION"], tags["OP4KSR_MODEL_ID"], tags["DIGITAL_SOURCE_TYPE"]) == (
        "0.1.0", "preset:tiny:seed0", LABEL)
    assert (tags["OP4KSR_SOURCE"], tags["OP4KSR_SOURCE_SHA256"], tags["OP4KSR_PARAMS_HASH"]) == (
        str(source), sha256, "0123456789abcdef")
    read = _exiftool(target.read_bytes())
    assert read["Matroska:Op4ksrVersion"] == "0.1.0" and read["Matroska:Op4ksrSourceSha256"] == sha256
    assert read["Matroska:DigitalSourceType"] == LABEL and read["Matroska:AttachedFileName"] == "op4ksr.xmp"
    packet = _exiftool(xmp)  # the attached packet is the XMP an upscaled image carries
    assert packet["XMP-iptcExt:DigitalSourceType"] == LABEL
    assert packet["XMP-xmpMM:DerivedFrom"] == {"FilePath": str(source), "Sha256": sha256}
    assert packet["XMP-xmpMM:History"][0]["SoftwareAgent"] == "op4ksr 0.1.0 (model preset:tiny:seed0)"
    assert stream_packets(target, "audio") == stream_packets(source, "audio")  # still copied as it was


def test_mov_carries_the_tags_as_quicktime_keys(tmp_path, source):
    target = tmp_path / "out.mov"
    remaster_video(source, target, _identity, lambda h, w: (h, w), VideoSettings(codec="mpeg4", measure_flow=False),
                   provenance=PROVENANCE)
    with av.open(str(target)) as out:
        assert out.metadata["OP4KSR_MODEL_ID"] == "preset:tiny:seed0" and out.metadata["DIGITAL_SOURCE_TYPE"] == LABEL
        assert not out.streams.attachments  # MOV has no attachments: no XMP packet
    read = _exiftool(target.read_bytes())
    assert read["Keys:OP4KSR_VERSION"] == "0.1.0" and read["Keys:DIGITAL_SOURCE_TYPE"] == LABEL
    assert read["Keys:OP4KSR_SOURCE_SHA256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_without_provenance_the_file_has_no_op4ksr_tags(tmp_path, source):
    target = tmp_path / "out.mkv"
    remaster_video(source, target, _identity, lambda h, w: (h, w), SETTINGS)
    with av.open(str(target)) as out:
        assert not [k for k in out.metadata if k.startswith("OP4KSR")] and not out.streams.attachments
