"""A throwaway CA and C2PA signing certificate, named as a test identity, for demos and tests.

Never for publication: anyone can make one, so a verifier trusts it only when told to (the CA
file as a `--trust` anchor). The signing certificate meets what C2PA validators ask of one
(C2PA 2.1, 14.5.1): issued by a CA (not self-signed), digitalSignature key usage, the
documentSigning and emailProtection extended key usages, key identifiers; ES256 (P-256).
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

TEST_ORGANISATION = "op4ksr TEST IDENTITY - not for publication"
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")


@dataclass(frozen=True)
class IdentityFiles:
    """Where `make_test_identity` wrote: the chain (leaf + CA), the key (mode 600) and the CA alone."""

    cert_chain: Path
    private_key: Path
    trust_anchor: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_ORGANISATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: x509.Name, issuer: x509.Name, public_key, signing_key, days: int, ca: bool,
                 issuer_public_key) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # some clock skew between machines
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False))
    if ca:
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False)
    else:
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    return builder.add_extension(usage, critical=True).sign(signing_key, hashes.SHA256())


def make_test_identity(folder: str | Path, *, days: int = 365) -> IdentityFiles:
    """Write a test CA, a signing certificate issued by it and the signing key (ES256) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, signer_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("op4ksr test CA")
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, days, True, ca_key.public_key())
    leaf = _certificate(_name("op4ksr test signer"), ca_name, signer_key.public_key(), ca_key, days, False,
                        ca_key.public_key())
    pem = serialization.Encoding.PEM
    files = IdentityFiles(folder / "test-signer-chain.pem", folder / "test-signer-key.pem",
                              folder / "test-ca.pem")
    files.cert_chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    files.trust_anchor.write_bytes(ca.public_bytes(pem))
    key_pem = signer_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    descriptor = os.open(files.private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key_pem)
    os.chmod(files.private_key, 0o600)  # an existing file keeps its old mode through O_CREAT
    return files
