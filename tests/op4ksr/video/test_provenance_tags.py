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


def test_with_a_signer_a_mov_carries_its_c2pa_manifest_and_a_matroska_file_a_sidecar(tmp_path, source):
    """c2pa-python 0.38.1 embeds in MOV/MP4 (a BMFF hash); Matroska it does not know, so its manifest
    is a `.c2pa` sidecar whose data hash covers every byte of the file. A flipped byte fails both."""
    from op4ksr.provenance.identity import check_identity
    from op4ksr.provenance.manifest import ManifestSigner
    from op4ksr.provenance.throwaway_identity import make_test_identity
    from op4ksr.provenance.verify import verify_output

    files = make_test_identity(tmp_path / "identity")
    signer = ManifestSigner(check_identity(files.cert_chain.read_bytes(), files.private_key.read_bytes(), "es256",
                                           cert_key="provenance.cert_chain", key_key="provenance.private_key"))
    trust = files.trust_anchor.read_text()
    for suffix, codec, mime, kind in ((".mov", "mpeg4", "video/quicktime", "signed"),
                                      (".mkv", "ffv1", "video/x-matroska", "sidecar")):
        target = tmp_path / f"out{suffix}"
        report = remaster_video(source, target, _identity, lambda h, w: (h, w),
                                VideoSettings(codec=codec, measure_flow=False), provenance=PROVENANCE, signer=signer)
        assert report["c2pa"] == kind and report["c2pa_manifest"].startswith("urn:c2pa:")
        sidecar = tmp_path / f"out{suffix}.c2pa"
        assert sidecar.is_file() == (kind == "sidecar") and not list(tmp_path.glob("*.signing"))
        data, store = target.read_bytes(), sidecar.read_bytes() if kind == "sidecar" else None
        verdict = verify_output(str(target), data, mime, sidecar=store, trust_anchors_pem=trust)
        assert verdict.ok and verdict.digital_source_type == GENERATIVE, verdict.problem
        assert verdict.label == report["c2pa_manifest"]
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 1
        assert verify_output(str(target), bytes(flipped), mime, sidecar=store,
                             trust_anchors_pem=trust).hash_binding == "mismatch"
        with av.open(str(target)) as out:  # the tags are still there, and the frames
            assert out.metadata["OP4KSR_MODEL_ID"] == "preset:tiny:seed0"
            assert len(list(out.decode(video=0))) == 3
