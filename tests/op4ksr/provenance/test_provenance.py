"""Provenance of outputs: the XMP label and lineage read back by exiftool, C2PA manifests signed with a
test identity made here and read back by c2pa-python's Reader, tampering caught, identities checked.

exiftool is Debian's libimage-exiftool-perl (`make test` installs it when missing and we are root).
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import shutil
import subprocess

import numpy as np
import pytest
import tifffile
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image, PngImagePlugin

from op4ksr.images.codec import decode_image, encode_image
from op4ksr.provenance.identity import SigningIdentityError, check_identity, read_pem, warn_if_readable_by_others
from op4ksr.provenance.lineage import GENERATIVE, INTERPOLATED, Lineage, sha256_hex, source_type_for
from op4ksr.provenance.manifest import ManifestSigner, quality_summary
from op4ksr.provenance.stamp import stamp_output
from op4ksr.provenance import throwaway_identity
from op4ksr.provenance.throwaway_identity import make_test_identity
from op4ksr.provenance.verify import verify_output
from tests.badinputs import encode, noise
from tests.icc_profiles import ADOBE_RGB, rgb_profile

MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "tiff": "image/tiff"}
SOURCE_XMP = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
              b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
              b'xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#" '
              b'dc:source="archive box 17" xmpMM:DocumentID="xmp.did:master-17" xmpMM:InstanceID="xmp.iid:scan-1">'
              b'<xmpMM:History><rdf:Seq><rdf:li rdf:parseType="Resource"><stEvt:action>created</stEvt:action>'
              b'<stEvt:softwareAgent>Archive Scanner 9</stEvt:softwareAgent></rdf:li></rdf:Seq></xmpMM:History>'
              b'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')
EXIFTOOL = shutil.which("exiftool")


@pytest.fixture(scope="module")
def identity_files(tmp_path_factory):
    return make_test_identity(tmp_path_factory.mktemp("identity"))


@pytest.fixture(scope="module")
def identity(identity_files):
    return check_identity(identity_files.cert_chain.read_bytes(), identity_files.private_key.read_bytes(), "es256",
                          cert_key="provenance.cert_chain", key_key="provenance.private_key")


@pytest.fixture(scope="module")
def signer(identity):
    return ManifestSigner(identity)


def exiftool(data: bytes) -> dict:
    assert EXIFTOOL, "exiftool is missing: make test installs Debian's libimage-exiftool-perl"
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-struct", "-"], input=data, capture_output=True, check=True)
    return json.loads(out.stdout)[0]


def lineage(parent: bytes, **overrides) -> Lineage:
    values = dict(source_key="masters/box17/scan-1.png", source_sha256=sha256_hex(parent), software_version="0.1.0",
                  model_id="preset:tiny:seed0", params_hash="0123456789abcdef", digital_source_type=GENERATIVE,
                  source_etag='"etag-1"', input_size="12x10", output_size="24x20")
    return Lineage(**(values | overrides))


def master(fmt: str, *, alpha: bool = False, sixteen: bool = False) -> bytes:
    """A small input with EXIF (Make), an ICC profile and the archive's own XMP."""
    if sixteen:
        samples = np.random.default_rng(3).integers(0, 65536, (10, 12, 4 if alpha else 3)).astype(np.uint16)
        out = io.BytesIO()
        tifffile.imwrite(out, samples, photometric="rgb", iccprofile=rgb_profile(ADOBE_RGB),
                         extrasamples=("unassalpha",) if alpha else None,
                         extratags=[(700, 1, len(SOURCE_XMP), SOURCE_XMP, True)])
        return out.getvalue()
    exif, text = Image.Exif(), PngImagePlugin.PngInfo()
    exif[0x010F] = "Archive Scanner Co"
    text.add_itxt("XML:com.adobe.xmp", SOURCE_XMP.decode())
    return encode(noise(10, 12, 5, channels=4 if alpha else 3), "PNG", exif=exif.tobytes(), pnginfo=text,
                  icc_profile=rgb_profile(ADOBE_RGB))


def upscale(image) -> tuple[torch.Tensor, torch.Tensor | None]:
    """2x nearest-neighbour of the decoded input: the pixels do not matter here, the metadata does."""
    rgb = image.rgb.repeat_interleave(2, 1).repeat_interleave(2, 2)
    alpha = None if image.alpha is None else image.alpha.repeat_interleave(2, 1).repeat_interleave(2, 2)
    return (rgb if alpha is None else rgb / alpha.clamp_min(1e-4)).clamp(0, 1), alpha


def stamped(parent: bytes, fmt: str, signer, **kwargs):
    image = decode_image(parent)
    rgb, alpha = upscale(image)
    return stamp_output(lambda xmp: encode_image(rgb, image, fmt, alpha=alpha, xmp=xmp), image.xmp, lineage(parent),
                        signer, output_mime=MIME[fmt], parent=parent, parent_mime="image/png" if parent[:4] == b"\x89PNG"
                        else "image/tiff", quality=quality_summary({"ap_excess": 0.01, "flagged": False}), **kwargs)


CASES = [("png", {}), ("jpeg", {}), ("webp", {}), ("tiff", {}), ("png", {"alpha": True}), ("webp", {"alpha": True}),
         ("png", {"sixteen": True}), ("tiff", {"sixteen": True, "alpha": True})]


@pytest.mark.parametrize("fmt,kind", CASES, ids=[f"{f}-{'-'.join(k) or 'rgb8'}" for f, k in CASES])
def test_every_format_carries_the_label_the_lineage_and_a_trusted_manifest(fmt, kind, signer, identity_files):
    parent = master(fmt, **kind)
    out = stamped(parent, fmt, signer)
    assert out.c2pa == "signed" and out.label.startswith("urn:c2pa:")
    tags = exiftool(out.data)
    assert tags["XMP-iptcExt:DigitalSourceType"].endswith("/compositeWithTrainedAlgorithmicMedia")
    derived = tags["XMP-xmpMM:DerivedFrom"]
    assert derived["FilePath"] == "masters/box17/scan-1.png" and derived["DocumentID"] == "xmp.did:master-17"
    assert tags["XMP-xmpMM:OriginalDocumentID"] == "xmp.did:master-17"
    history = tags["XMP-xmpMM:History"]
    assert [e["Action"] for e in history] == ["created", "edited"]  # the input's event kept, ours appended
    assert history[1]["SoftwareAgent"] == "op4ksr 0.1.0 (model preset:tiny:seed0)"
    assert "params_hash=0123456789abcdef" in history[1]["Parameters"]
    assert tags["XMP-dc:Source"] == "archive box 17"  # the input's own XMP survives
    assert tags["ICC_Profile:ProfileDescription"] == ADOBE_RGB["name"]
    reopened = Image.open(io.BytesIO(out.data))
    assert reopened.info["icc_profile"] == rgb_profile(ADOBE_RGB)
    if not kind.get("sixteen"):  # (16-bit TIFF keeps no EXIF but provenance: docs/RELIABILITY.md)
        # read with Pillow: exiftool 12.57 skips a PNG's eXIf chunk after C2PA's caBX chunk (its warning:
        # "IFD0 pointer references previous JUMBFBox directory"); the chunk itself is intact
        assert reopened.getexif()[0x010F] == "Archive Scanner Co"  # EXIF survives signing
    verdict = verify_output("out", out.data, MIME[fmt], trust_anchors_pem=identity_files.trust_anchor.read_text(),
                            read_parent=lambda key: parent if key == "masters/box17/scan-1.png" else None)
    assert verdict.ok, verdict.problem
    assert (verdict.signature, verdict.hash_binding, verdict.trust, verdict.parent) == ("valid", "match", "trusted",
                                                                                      "match")
    assert verdict.digital_source_type == GENERATIVE and verdict.label == out.label
    assert decode_image(out.data).size == (20, 24)  # still an image a decoder reads


def test_the_manifest_names_parent_actions_model_and_quality(signer, identity_files):
    import c2pa

    parent = master("png")
    out = stamped(parent, "png", signer)
    settings = {"trust": {"user_anchors": identity_files.trust_anchor.read_text()},
                "verify": {"remote_manifest_fetch": False}}
    with c2pa.Reader("image/png", io.BytesIO(out.data), context=c2pa.Context.from_dict(settings)) as reader:
        assert reader.get_validation_state() == "Trusted"
        manifest = json.loads(reader.json())["manifests"][out.label]
    (ingredient,) = manifest["ingredients"]
    assert ingredient["relationship"] == "parentOf" and ingredient["metadata"]["org.op4ksr.sha256"] == sha256_hex(parent)
    actions = next(a["data"]["actions"] for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited", "c2pa.resized"]
    assert actions[1]["parameters"]["org.op4ksr.model_id"] == "preset:tiny:seed0"
    assert actions[1]["softwareAgent"] == {"name": "op4ksr", "version": "0.1.0"}
    ours = next(a["data"] for a in manifest["assertions"] if a["label"] == "org.op4ksr.upscale")
    assert ours["params_hash"] == "0123456789abcdef" and ours["source"]["etag"] == '"etag-1"'
    assert ours["quality"] == quality_summary({"ap_excess": 0.01, "flagged": False})
    assert manifest["signature_info"]["issuer"].startswith("op4ksr TEST IDENTITY")


@pytest.mark.parametrize("where", [b"IDAT", b"compositeWithTrained"], ids=["pixels", "xmp-label"])
def test_one_flipped_byte_fails_verification(signer, where):
    out = stamped(master("png"), "png", signer)
    tampered = bytearray(out.data)
    tampered[out.data.index(where) + 12] ^= 0x01  # in the pixel data, or in the XMP label's text
    verdict = verify_output("out.png", bytes(tampered), "image/png")
    assert not verdict.ok and verdict.hash_binding == "mismatch"
    assert "changed after signing" in verdict.problem and "\n" not in verdict.problem


def test_no_manifest_and_a_foreign_parent_each_fail_in_one_line(signer, identity_files):
    unsigned = stamped(master("png"), "png", None)
    assert unsigned.c2pa == "none" and unsigned.label is None
    verdict = verify_output("plain.png", unsigned.data, "image/png")
    assert not verdict.ok and verdict.problem == "no C2PA manifest"
    out = stamped(master("png"), "png", signer)
    other = master("png", alpha=True)
    verdict = verify_output("out.png", out.data, "image/png", read_parent=lambda key: other)
    assert not verdict.ok and verdict.parent == "mismatch" and "not the file this output was made from" in verdict.problem


def test_a_sidecar_manifest_leaves_the_output_as_encoded_and_binds_it(signer):
    parent = master("png")
    embedded = stamped(parent, "jpeg", None).data
    out = stamped(parent, "jpeg", signer, embed=False)
    assert out.c2pa == "sidecar" and out.sidecar and len(out.data) == len(embedded)
    assert verify_output("out.jpg", out.data, "image/jpeg", sidecar=out.sidecar).ok
    tampered = bytearray(out.data)
    tampered[-100] ^= 0x01
    assert not verify_output("out.jpg", bytes(tampered), "image/jpeg", sidecar=out.sidecar).ok


def test_an_untrusted_signer_fails_against_other_anchors(signer, tmp_path):
    out = stamped(master("png"), "png", signer)
    stranger = make_test_identity(tmp_path / "stranger")
    verdict = verify_output("out.png", out.data, "image/png", trust_anchors_pem=stranger.trust_anchor.read_text())
    assert not verdict.ok and verdict.trust == "untrusted" and verdict.signature == "valid"


def test_a_callback_signer_signs_with_a_key_held_elsewhere(identity, identity_files):
    from dataclasses import replace

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(identity.private_key_pem, None)  # stands in for a KMS
    remote = ManifestSigner(replace(identity, private_key_pem=b""),
                            callback=lambda data: key.sign(data, ec.ECDSA(hashes.SHA256())))
    out = stamped(master("png"), "png", remote)
    verdict = verify_output("out.png", out.data, "image/png", trust_anchors_pem=identity_files.trust_anchor.read_text())
    assert verdict.ok and verdict.trust == "trusted"


def test_xmp_without_an_input_packet_is_made_fresh(signer):
    parent = encode(noise(10, 12, 7), "PNG")
    out = stamped(parent, "png", None)
    tags = exiftool(out.data)
    assert tags["XMP-xmpMM:DerivedFrom"]["FilePath"] == "masters/box17/scan-1.png"
    assert [e["Action"] for e in tags["XMP-xmpMM:History"]] == ["edited"]
    assert "XMP-xmpMM:OriginalDocumentID" not in tags


def test_source_type_follows_the_model_unless_set():
    assert source_type_for("auto", "op4ksr") == GENERATIVE and source_type_for("auto", "spandrel") == GENERATIVE
    assert source_type_for("auto", "bicubic") == INTERPOLATED
    assert source_type_for(INTERPOLATED, "command") == INTERPOLATED
    with pytest.raises(ValueError, match="not one of"):
        source_type_for("aiGenerated", "op4ksr")


# -- identities --------------------------------------------------------------------------------

def test_identity_problems_are_refused_in_one_line_naming_the_key(identity_files, tmp_path):
    chain, key = identity_files.cert_chain.read_bytes(), identity_files.private_key.read_bytes()
    names = {"cert_key": "provenance.cert_chain", "key_key": "provenance.private_key"}
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)
    with pytest.raises(SigningIdentityError, match=r"^provenance.cert_chain: certificate .* is valid only from"):
        check_identity(chain, key, "es256", now=later, **names)
    other_key = make_test_identity(tmp_path / "other").private_key.read_bytes()
    with pytest.raises(SigningIdentityError, match=r"^provenance.private_key: the private key does not match"):
        check_identity(chain, other_key, "es256", **names)
    with pytest.raises(SigningIdentityError, match=r"^provenance.private_key: .* cannot sign ps256"):
        check_identity(chain, key, "ps256", **names)
    own_key = ec.generate_private_key(ec.SECP256R1())
    own_name = throwaway_identity._name("self-signed signer")
    self_signed = throwaway_identity._certificate(own_name, own_name, own_key.public_key(), own_key, 30, False,
                                                  own_key.public_key()).public_bytes(serialization.Encoding.PEM)
    own_key_pem = own_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    with pytest.raises(SigningIdentityError, match=r"^provenance.cert_chain: .* is self-signed"):
        check_identity(self_signed, own_key_pem, "es256", **names)
    with pytest.raises(SigningIdentityError, match=r"^provenance.cert_chain: no file at"):
        read_pem(str(tmp_path / "missing.pem"), "provenance.cert_chain")
    with pytest.raises(SigningIdentityError, match=r"^provenance.private_key: environment variable OP4KSR_NO_SUCH"):
        read_pem("env:OP4KSR_NO_SUCH", "provenance.private_key")


def test_a_key_file_readable_by_others_gets_a_warning(identity_files, tmp_path, caplog):
    assert identity_files.private_key.stat().st_mode & 0o777 == 0o600
    open_key = tmp_path / "open-key.pem"
    open_key.write_bytes(identity_files.private_key.read_bytes())
    open_key.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="op4ksr"):
        warn_if_readable_by_others(str(identity_files.private_key), "provenance.private_key")
        assert not caplog.records
        warn_if_readable_by_others(str(open_key), "provenance.private_key")
    assert "can be read by other users" in caplog.text and "chmod 600" in caplog.text
    assert "BEGIN" not in caplog.text  # never the key itself


def test_the_identity_never_shows_its_key(identity):
    assert "PRIVATE" not in repr(identity) and identity.subject.startswith("CN=op4ksr test signer")
