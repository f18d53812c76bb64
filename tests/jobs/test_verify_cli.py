"""`op4ksr verify` and `op4ksr provenance test-identity` as a user runs them: a folder, an S3 prefix
(moto over HTTP) streamed with a sidecar, and the three failures each as one line with exit status 1."""
import json

import pytest

from jobs.cli import main
from op4ksr.images.codec import decode_image, encode_image
from op4ksr.provenance.identity import check_identity
from op4ksr.provenance.lineage import GENERATIVE, Lineage
from op4ksr.provenance.manifest import ManifestSigner
from op4ksr.provenance.stamp import stamp_output
from op4ksr.provenance.throwaway_identity import IdentityFiles
from tests.badinputs import encode, noise


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    folder = tmp_path_factory.mktemp("identity")
    assert main(["provenance", "test-identity", str(folder)]) == 0
    return IdentityFiles(folder / "test-signer-chain.pem", folder / "test-signer-key.pem", folder / "test-ca.pem")


def _signed(identity, key: str, master: bytes, *, embed: bool = True):
    """(output bytes, sidecar) of `master` upscaled 2x, labelled and signed as the pipeline does."""
    ident = check_identity(identity.cert_chain.read_bytes(), identity.private_key.read_bytes(), "es256",
                           cert_key="c", key_key="k")
    image = decode_image(master)
    rgb = image.rgb.repeat_interleave(2, 1).repeat_interleave(2, 2)
    lineage = Lineage(source_key=key, source_sha256=image.source_sha256, software_version="0.1.0", model_id="m",
                      params_hash="p", digital_source_type=GENERATIVE)
    out = stamp_output(lambda xmp: encode_image(rgb, image, "png", xmp=xmp), image.xmp, lineage,
                       ManifestSigner(ident), output_mime="image/png", parent=master, parent_mime="image/png",
                       embed=embed)
    return out.data, out.sidecar


@pytest.fixture
def catalog(tmp_path, identity):
    """masters/{a,b}.png and their signed outputs under out/images/."""
    masters, images = tmp_path / "masters", tmp_path / "out" / "images"
    masters.mkdir()
    images.mkdir(parents=True)
    for index, name in enumerate(("a.png", "b.png")):
        (masters / name).write_bytes(encode(noise(8, 10, index), "PNG"))
        (images / name).write_bytes(_signed(identity, name, (masters / name).read_bytes())[0])
    return masters, images


def test_a_folder_of_signed_outputs_passes_with_trust_and_inputs(catalog, identity, capsys):
    masters, images = catalog
    assert main(["verify", str(images), "--trust", str(identity.trust_anchor), "--inputs", str(masters)]) == 0
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [row[:6] for row in rows] == [["ok", "signed", "valid", "match", "trusted", "match"]] * 2
    assert "2 checked, 2 passed, 0 failed" in err


def test_tampered_unsigned_and_foreign_parent_each_fail_in_one_line(catalog, identity, capsys):
    masters, images = catalog
    data = bytearray((images / "a.png").read_bytes())
    data[data.index(b"IDAT") + 12] ^= 0x01
    (images / "a.png").write_bytes(bytes(data))
    (images / "plain.png").write_bytes(encode(noise(8, 10, 3), "PNG"))
    (masters / "b.png").write_bytes(encode(noise(8, 10, 9), "PNG"))  # b's master is now another file
    assert main(["verify", str(images), "--inputs", str(masters), "--json"]) == 1
    verdicts = {v["path"].rsplit("/", 1)[-1]: v for v in map(json.loads, capsys.readouterr().out.splitlines())}
    assert verdicts["a.png"]["problem"] == ("hash binding fails (assertion.dataHash.mismatch): "
                                            "the file changed after signing")
    assert verdicts["plain.png"]["problem"] == "no C2PA manifest"
    assert verdicts["b.png"]["problem"] == "parent 'b.png' under --inputs is not the file this output was made from"
    assert not any(v["ok"] for v in verdicts.values())
    assert main(["verify", str(images / "plain.png")]) == 1
    assert capsys.readouterr().out.splitlines()[-1].strip() == "no C2PA manifest"


def test_an_s3_prefix_is_streamed_with_its_sidecars(s3_server, s3_bucket, identity, monkeypatch, capsys):
    storage = s3_server.open_storage(f"s3://{s3_bucket}/out/")
    master = encode(noise(8, 10, 4), "PNG")
    embedded, _ = _signed(identity, "x/embedded.png", master)
    plain, sidecar = _signed(identity, "x/sidecar.png", master, embed=False)
    storage.put("images/x/embedded.png", embedded)
    storage.put("images/x/sidecar.png", plain)
    storage.put("images/x/sidecar.png.c2pa", sidecar)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.credentials.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.credentials.secret_access_key)
    assert main(["verify", f"s3://{s3_bucket}/out/images/", f"storage.endpoint_url={s3_server.endpoint_url}",
                 "--json"]) == 0
    verdicts = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(v["path"].rsplit("/", 1)[-1], v["c2pa"], v["ok"]) for v in verdicts] == [
        ("embedded.png", "signed", True), ("sidecar.png", "sidecar", True)]
