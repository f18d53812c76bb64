"""Signing identities: a certificate chain + a private key, loaded from PEM and checked before any work.

An identity is refused in one line (a SigningIdentityError naming the config key) when its
file is missing, its certificate has expired or is not yet valid, its key does not match the
certificate, or the certificate cannot sign C2PA claims (no digitalSignature key usage, no
allowed extended key usage, a CA or a self-signed certificate: C2PA validators refuse those).
Where the PEM comes from (a path, an environment variable, an object store) is the caller's
business: object-store URIs are materialised by pipeline code, never here.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from op4ksr.errors import UserError
from op4ksr.provenance.lineage import ALGORITHMS

log = logging.getLogger("op4ksr")

# EKUs a C2PA claim-signing certificate may carry (C2PA 2.1, 14.5.1): documentSigning, emailProtection,
# the C2PA and Microsoft C2PA claim-signing OIDs
C2PA_EKUS = (ObjectIdentifier("1.3.6.1.5.5.7.3.36"), ExtendedKeyUsageOID.EMAIL_PROTECTION,
             ObjectIdentifier("1.3.6.1.4.1.62558.2.1"), ObjectIdentifier("1.3.6.1.4.1.311.76.59.1.9"))


class SigningIdentityError(UserError):
    """The configured certificate chain or key cannot sign: the message names the key and the fix."""


@dataclass(frozen=True)
class SigningIdentity:
    """A checked certificate chain (leaf first) and its algorithm; the key stays out of repr and logs."""

    cert_chain_pem: bytes
    private_key_pem: bytes = field(repr=False)
    algorithm: str
    tsa_url: str | None = None
    subject: str = ""
    not_after: dt.datetime | None = None

    @property
    def fingerprint(self) -> str:
        """sha256 of the leaf certificate (hex): names the identity in reports without any secret."""
        return x509.load_pem_x509_certificates(self.cert_chain_pem)[0].fingerprint(hashes.SHA256()).hex()


def read_pem(source: str, key_name: str) -> bytes:
    """PEM bytes from `env:NAME` (an environment variable) or a local path; one-line error naming `key_name`."""
    if source.startswith("env:"):
        value = os.environ.get(source[4:])
        if not value:
            raise SigningIdentityError(f"{key_name}: environment variable {source[4:]} is not set")
        return value.encode()
    path = Path(source).expanduser()
    if not path.is_file():
        raise SigningIdentityError(f"{key_name}: no file at {path}")
    return path.read_bytes()


def warn_if_readable_by_others(source: str, key_name: str) -> None:
    """Log a warning when a private key file can be read by its group or by anyone (chmod 600 it)."""
    if source.startswith("env:") or not Path(source).is_file():
        return
    mode = Path(source).stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s: %s can be read by other users (mode %o): chmod 600 it", key_name, source, mode & 0o777)


def check_identity(cert_chain_pem: bytes, private_key_pem: bytes, algorithm: str, *, cert_key: str,
                   key_key: str, tsa_url: str | None = None, now: dt.datetime | None = None) -> SigningIdentity:
    """A SigningIdentity once the chain, key and algorithm fit together; SigningIdentityError otherwise."""
    if algorithm not in ALGORITHMS:
        raise SigningIdentityError(f"provenance.algorithm: {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    try:
        chain = x509.load_pem_x509_certificates(cert_chain_pem)
    except ValueError as err:
        raise SigningIdentityError(f"{cert_key}: not a PEM certificate chain ({err})") from err
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as err:
        raise SigningIdentityError(f"{key_key}: not an unencrypted PEM private key ({err})") from err
    leaf = chain[0]
    now = now or dt.datetime.now(dt.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise SigningIdentityError(f"{cert_key}: certificate {leaf.subject.rfc4514_string()} is valid only from "
                                   f"{leaf.not_valid_before_utc:%Y-%m-%d} to {leaf.not_valid_after_utc:%Y-%m-%d}")
    if _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):
        raise SigningIdentityError(f"{key_key}: the private key does not match the certificate in {cert_key}")
    _check_key_fits(key, algorithm, key_key)
    _check_c2pa_usage(leaf, cert_key)
    return SigningIdentity(cert_chain_pem, private_key_pem, algorithm, tsa_url or None,
                           leaf.subject.rfc4514_string(), leaf.not_valid_after_utc)


def _public_bytes(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_key_fits(key, algorithm: str, key_key: str) -> None:
    kind = {"es": ec.EllipticCurvePrivateKey, "ps": rsa.RSAPrivateKey, "ed": ed25519.Ed25519PrivateKey}[algorithm[:2]]
    if not isinstance(key, kind):
        raise SigningIdentityError(f"{key_key}: a {type(key).__name__.removeprefix('_')} cannot sign {algorithm}")
    curves = {"es256": "secp256r1", "es384": "secp384r1", "es512": "secp521r1"}
    if algorithm in curves and key.curve.name != curves[algorithm]:
        raise SigningIdentityError(f"{key_key}: {algorithm} needs a {curves[algorithm]} key, not {key.curve.name}")


def _check_c2pa_usage(leaf: x509.Certificate, cert_key: str) -> None:
    """C2PA validators refuse CA, self-signed and wrong-purpose signing certificates: refuse them first."""
    name = leaf.subject.rfc4514_string()
    if leaf.issuer == leaf.subject:
        raise SigningIdentityError(f"{cert_key}: {name} is self-signed; C2PA needs a certificate issued by a CA "
                                   "(op4ksr provenance test-identity DIR makes a test one)")
    try:
        if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise SigningIdentityError(f"{cert_key}: {name} is a CA certificate; put the signing certificate first")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        ekus = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound as err:
        raise SigningIdentityError(f"{cert_key}: {name} lacks key usage or extended key usage, "
                                   "which C2PA signing certificates must have") from err
    if not usage.digital_signature or not ekus & set(C2PA_EKUS):
        raise SigningIdentityError(f"{cert_key}: {name} is not for signing documents (needs digitalSignature and "
                                   "an extended key usage such as documentSigning or emailProtection)")
