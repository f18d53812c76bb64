"""The actor's provenance step: outputs labelled and signed in the encode step, a failed signature fails
its row and writes nothing, a sidecar when asked; a bad identity is refused before anything is listed."""
import json

import pytest

from actors.upscaler import UpscaleActor
from jobs.config import load_config
from jobs.specs import actor_options, provenance_options
from op4ksr.provenance.identity import SigningIdentityError
from op4ksr.provenance.manifest import SigningError
from op4ksr.provenance.throwaway_identity import make_test_identity
from op4ksr.provenance.verify import verify_output
from pipeline.fleet.signing import check_before_run
from pipeline.storage import StorageSpec
from tests.actors.test_upscaler import TINY, fetched  # noqa: F401 - the fixture


@pytest.fixture
def fetched_with_sources(tmp_path, fetched):  # noqa: F811
    """The same block fetched as a signing run fetches it: the inputs' bytes travel with their pixels."""
    import dataclasses

    import pyarrow as pa

    from jobs.specs import size_policy
    from pipeline.run.fetch import FetchContext, FetchDecode

    ctx = FetchContext(StorageSpec(str(tmp_path / "in")), StorageSpec(str(tmp_path / "out")), "r1", "m", "p", "png",
                       dataclasses.replace(size_policy(load_config()), min_side=8), keep_source_bytes=True)
    return FetchDecode(ctx)(pa.table({"key": ["a.png", "b.png", "c.png", "bad.png"], "etag": ["e"] * 4}))


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    return make_test_identity(tmp_path_factory.mktemp("identity"))


def _signing_options(tmp_path, identity, *overrides):
    cfg = load_config([], ["actors.warmup_shapes=[[32,32]]", f"provenance.cert_chain={identity.cert_chain}",
                           f"provenance.private_key={identity.private_key}", *overrides])
    return actor_options(cfg, StorageSpec(str(tmp_path / "out")), "p")


def test_outputs_are_signed_in_the_encode_step_and_the_records_say_so(tmp_path, fetched_with_sources, identity):
    import pickle

    assert pickle.loads(fetched_with_sources.to_pylist()[0]["payload"]).source_bytes[:4] == b"\x89PNG"
    actor = UpscaleActor(TINY, _signing_options(tmp_path, identity))
    records = {r["key"]: r for r in actor(fetched_with_sources).to_pylist()}
    anchors = identity.trust_anchor.read_text()
    for key in ("a.png", "b.png", "c.png"):
        record = records[key]
        assert (record["status"], record["c2pa"]) == ("ok", "signed")
        assert record["digital_source_type"] == "compositeWithTrainedAlgorithmicMedia"
        # image and report, and the contradiction heatmap where the (random-weight) output is flagged
        assert record["cpu_provenance_seconds"] > 0 and record["requests_put"] == 2 + (record["heatmap_key"] is not None)
        data = (tmp_path / "out" / record["output_key"]).read_bytes()
        verdict = verify_output(key, data, "image/png", trust_anchors_pem=anchors,
                                read_parent=lambda name: (tmp_path / "in" / name).read_bytes())
        assert verdict.ok and verdict.parent == "match" and verdict.label == record["c2pa_manifest"], verdict.problem
        report = json.loads((tmp_path / "out" / "reports" / f"{key}.json").read_text())
        assert report["c2pa"] == "signed" and report["c2pa_manifest"] == record["c2pa_manifest"]
    assert records["bad.png"]["c2pa"] is None
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert b"PRIVATE KEY" not in written and identity.private_key.read_bytes()[40:80] not in written


def test_a_failed_signature_fails_its_row_and_leaves_no_output(tmp_path, fetched, identity, monkeypatch):  # noqa: F811
    actor = UpscaleActor(TINY, _signing_options(tmp_path, identity))
    real_sign = actor.stamper.signer.sign

    def sign_all_but_c(data, mime, lineage, *args, **kwargs):
        if lineage.source_key == "c.png":
            raise SigningError("C2PA signing failed: the HSM is unreachable")
        return real_sign(data, mime, lineage, *args, **kwargs)

    monkeypatch.setattr(actor.stamper.signer, "sign", sign_all_but_c)
    records = {r["key"]: r for r in actor(fetched).to_pylist()}
    assert records["c.png"]["status"] == "failed" and records["c.png"]["error_class"] == "SigningError"
    assert "HSM is unreachable" in records["c.png"]["error"]
    assert not (tmp_path / "out" / "images" / "c.png").exists()  # no unsigned output in its place
    assert not (tmp_path / "out" / "reports" / "c.png.json").exists()
    assert records["a.png"]["status"] == "ok" and records["a.png"]["c2pa"] == "signed"


def test_a_sidecar_is_written_beside_its_output_when_not_embedding(tmp_path, fetched, identity):  # noqa: F811
    actor = UpscaleActor(TINY, _signing_options(tmp_path, identity, "provenance.embed=false"))
    record = next(r for r in actor(fetched).to_pylist() if r["key"] == "a.png")
    assert record["c2pa"] == "sidecar" and record["requests_put"] == 3 + (record["heatmap_key"] is not None)
    image = tmp_path / "out" / record["output_key"]
    sidecar = image.with_name(image.name + ".c2pa").read_bytes()
    assert verify_output("a", image.read_bytes(), "image/png", sidecar=sidecar).ok


def test_without_an_identity_outputs_are_labelled_only(tmp_path, fetched, caplog):  # noqa: F811
    options = actor_options(load_config([], ["actors.warmup_shapes=[[32,32]]", "peer.kind=command",
                                             "provenance.digital_source_type=algorithmicallyEnhanced"]),
                            StorageSpec(str(tmp_path / "out")), "p")
    assert options.provenance.signing is None and options.provenance.digital_source_type == "algorithmicallyEnhanced"
    with caplog.at_level("INFO", logger="op4ksr"):
        line = check_before_run(options.provenance)
    assert line in caplog.text and "XMP label but no C2PA manifest" in line
    actor = UpscaleActor(TINY, options)
    record = next(r for r in actor(fetched).to_pylist() if r["key"] == "a.png")
    assert (record["c2pa"], record["c2pa_manifest"]) == ("none", None)
    assert b"algorithmicallyEnhanced" in (tmp_path / "out" / record["output_key"]).read_bytes()


def test_a_bad_identity_is_refused_before_the_run_in_one_line(tmp_path, identity):
    other = make_test_identity(tmp_path / "other")
    cfg = load_config([], [f"provenance.cert_chain={identity.cert_chain}", f"provenance.private_key={other.private_key}"])
    with pytest.raises(SigningIdentityError, match=r"^provenance.private_key: the private key does not match"):
        check_before_run(provenance_options(cfg))
    cfg = load_config([], [f"provenance.cert_chain={tmp_path / 'none.pem'}", "provenance.private_key=env:NO_SUCH_KEY"])
    with pytest.raises(SigningIdentityError, match=r"^provenance.cert_chain: no file at"):
        check_before_run(provenance_options(cfg))
    # a run refuses it before it lists, locks or writes anything
    from jobs.specs import build_run_spec
    from pipeline.run.backfill import run_backfill

    (tmp_path / "in").mkdir()
    cfg = load_config([], [f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}",
                           f"provenance.cert_chain={identity.cert_chain}", f"provenance.private_key={other.private_key}"])
    with pytest.raises(SigningIdentityError, match="does not match"):
        run_backfill(build_run_spec(cfg, "r1", ""), UpscaleActor)
    assert not (tmp_path / "out").exists()
