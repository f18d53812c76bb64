"""A signing identity read from where provenance.* says it lies: an object store (moto over HTTP) or an
environment variable; a missing object is refused in one line naming the key."""
import pytest

from jobs.config import load_config
from jobs.specs import signing_spec
from op4ksr.provenance.identity import SigningIdentityError
from op4ksr.provenance.throwaway_identity import make_test_identity


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    return make_test_identity(tmp_path_factory.mktemp("identity"))


def test_an_identity_in_an_object_store_is_read_there(s3_server, s3_bucket, identity):
    keys = s3_server.open_storage(f"s3://{s3_bucket}/keys/")
    keys.put("chain.pem", identity.cert_chain.read_bytes())
    keys.put("key.pem", identity.private_key.read_bytes())
    cfg = load_config([], [f"storage.endpoint_url={s3_server.endpoint_url}",
                           f"provenance.cert_chain=s3://{s3_bucket}/keys/chain.pem",
                           f"provenance.private_key=s3://{s3_bucket}/keys/key.pem"])
    spec = signing_spec(cfg, s3_server.credentials)
    assert "PRIVATE" not in repr(spec)  # the spec names where the key lies, never the key
    assert spec.load().subject.startswith("CN=op4ksr test signer")
    cfg = load_config([], [f"storage.endpoint_url={s3_server.endpoint_url}",
                           f"provenance.cert_chain=s3://{s3_bucket}/keys/chain.pem",
                           f"provenance.private_key=s3://{s3_bucket}/keys/gone.pem"])
    with pytest.raises(SigningIdentityError, match=rf"^provenance.private_key: no object at s3://{s3_bucket}/keys/gone"):
        signing_spec(cfg, s3_server.credentials).load()


def test_an_identity_in_environment_variables(identity, monkeypatch):
    monkeypatch.setenv("OP4KSR_TEST_CHAIN", identity.cert_chain.read_text())
    monkeypatch.setenv("OP4KSR_TEST_KEY", identity.private_key.read_text())
    cfg = load_config([], ["provenance.cert_chain=env:OP4KSR_TEST_CHAIN", "provenance.private_key=env:OP4KSR_TEST_KEY"])
    assert signing_spec(cfg).load().algorithm == "es256"


def test_half_an_identity_is_refused():
    from jobs.config import ConfigError

    with pytest.raises(ConfigError, match="provenance.private_key is empty"):
        signing_spec(load_config([], ["provenance.cert_chain=chain.pem"]))
