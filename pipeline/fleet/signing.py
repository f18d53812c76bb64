"""Where the signing identity comes from, and its loading: a local path, `env:NAME`, or an object-store URI.

The specs carry only where the PEM lies, never the PEM: the driver loads and checks the identity
once before listing (a bad one is refused in one line naming the key), and each model actor loads
it again where it signs, so no key travels in a pickled spec, a log or a run folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from typing import TYPE_CHECKING

from pipeline.storage import ObjectNotFoundError, StorageSpec

if TYPE_CHECKING:  # the identity's modules (cryptography) load where an identity is read, not with every spec
    from op4ksr.provenance.identity import SigningIdentity


@dataclass(frozen=True)
class PemSource:
    """One PEM file as configured: `location` (a path, env:NAME or a URI), with the object's folder and
    name for a URI."""

    config_key: str  # e.g. provenance.private_key: every error names it
    location: str
    storage: StorageSpec | None = None
    name: str = ""

    def read(self) -> bytes:
        from op4ksr.provenance.identity import SigningIdentityError, read_pem

        if self.storage is None:
            return read_pem(self.location, self.config_key)
        try:
            return self.storage.open().get(self.name)
        except ObjectNotFoundError:
            raise SigningIdentityError(f"{self.config_key}: no object at {self.location}") from None


@dataclass(frozen=True, kw_only=True)
class SigningSpec:
    cert_chain: PemSource
    private_key: PemSource
    algorithm: str
    tsa_url: str

    def load(self) -> SigningIdentity:
        """The checked identity; SigningIdentityError (one line naming the key) if it cannot sign."""
        from op4ksr.provenance.identity import check_identity, warn_if_readable_by_others

        if self.private_key.storage is None:
            warn_if_readable_by_others(self.private_key.location, self.private_key.config_key)
        return check_identity(self.cert_chain.read(), self.private_key.read(), self.algorithm,
                              cert_key=self.cert_chain.config_key, key_key=self.private_key.config_key,
                              tsa_url=self.tsa_url or None)


@dataclass(frozen=True, kw_only=True)
class ProvenanceOptions:
    """The model actor's provenance settings (config provenance.*)."""

    digital_source_type: str  # the IPTC term, `auto` already resolved for this model
    signing: SigningSpec | None  # None: XMP label only, no C2PA manifest
    embed: bool  # False: sidecar <output>.c2pa


def check_before_run(options: ProvenanceOptions) -> str:
    """The run's provenance line for the console and the page; SigningIdentityError first if the
    configured identity cannot sign (before anything is listed)."""
    from op4ksr.provenance.stamp import NO_MANIFEST_NOTE

    if options.signing is None:
        logging.getLogger("op4ksr").info(NO_MANIFEST_NOTE)
        return NO_MANIFEST_NOTE
    identity = options.signing.load()
    return f"outputs are signed (C2PA) by {identity.subject}, certificate valid until {identity.not_after:%Y-%m-%d}"
