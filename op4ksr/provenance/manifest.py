"""A signed C2PA manifest for one output, through c2pa-python (the native c2pa-rs library).

The manifest names the input as its `parentOf` ingredient (read from the input's bytes, so a
master that carries its own C2PA manifest keeps it as the ingredient's; the input's sha256 is
in the ingredient's metadata), and carries the actions `c2pa.opened` (the parent),
`c2pa.edited` (with the IPTC digital source type, the software agent and the model id) and
`c2pa.resized`, and an `org.op4ksr.upscale` assertion: version, model id, params hash, the
input's key and hashes, and the quality figures with their sha256. The claim hard-binds the
output's bytes (c2pa.hash.data), so one flipped byte fails verification.

Formats that C2PA embeds (all of op4ksr's: PNG, JPEG, TIFF, WebP) get the manifest inside;
otherwise, or when asked (`embed=False`), the output stays as encoded and the manifest store
goes into a sidecar `<output>.c2pa`.
"""
from __future__ import annotations

import io
import json
import threading
import uuid
from dataclasses import dataclass
from typing import Callable

from op4ksr.provenance.identity import SigningIdentity
from op4ksr.provenance.lineage import Lineage, sha256_hex, source_type_uri

ASSERTION = "org.op4ksr.upscale"
SIDECAR_SUFFIX = ".c2pa"
CONTEXT_SETTINGS = {"builder": {"thumbnail": {"enabled": False}},  # a 4K thumbnail costs more than the signature
                    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False, "verify_after_sign": False}}
QUALITY_FIELDS = ("ap_score_out", "ap_score_in", "ap_excess", "dominant_period_px", "period_px",
                  "lr_consistency_psnr", "colour_shift", "niqe", "flagged")
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "TIFF": "image/tiff", "WEBP": "image/webp",
        "GIF": "image/gif", "BMP": "image/bmp", "AVIF": "image/avif", "HEIF": "image/heif", "JXL": "image/jxl"}


class SigningError(RuntimeError):
    """c2pa could not sign this output: that row fails, no unsigned output is written in its place."""


@dataclass(frozen=True)
class SignedOutput:
    data: bytes              # the output's bytes: with the manifest inside, or as encoded when it has a sidecar
    sidecar: bytes | None    # the manifest store for `<output>.c2pa`, when not embedded
    label: str               # the manifest's label (urn:c2pa:...)

    @property
    def c2pa(self) -> str:
        """'signed' (embedded) or 'sidecar': the report's and manifest row's `c2pa` value."""
        return "sidecar" if self.sidecar is not None else "signed"


def quality_summary(record: dict) -> dict:
    """The quality figures a manifest carries, and their sha256 (of their sorted JSON), from a report/record."""
    figures = {name: record.get(name) for name in QUALITY_FIELDS}
    return {"figures": figures, "sha256": sha256_hex(json.dumps(figures, sort_keys=True).encode())}


def load_c2pa():
    import c2pa  # the native library loads on first use: importing op4ksr.provenance stays cheap

    return c2pa


class ManifestSigner:
    """Signs outputs with one identity; safe to call from several encode threads at once.

    `callback`: sign the bytes c2pa gives with a key kept elsewhere (KMS, HSM) and return the signature
    (for ES256, DER or raw r||s); `identity.private_key_pem` is then unused and may be empty."""

    def __init__(self, identity: SigningIdentity, callback: Callable[[bytes], bytes] | None = None):
        self.identity = identity
        self.callback = callback
        self._local = threading.local()
        self.embeddable = set(load_c2pa().Builder.get_supported_mime_types())

    def _signer_and_context(self):
        """One native signer and context per thread: c2pa's objects are not shared across threads here."""
        if getattr(self._local, "signer", None) is None:
            c2pa, ident = load_c2pa(), self.identity
            if self.callback is not None:
                alg = getattr(c2pa.C2paSigningAlg, ident.algorithm.upper())
                self._local.signer = c2pa.Signer.from_callback(self.callback, alg, ident.cert_chain_pem.decode(),
                                                               ident.tsa_url)
            else:
                info = c2pa.C2paSignerInfo(alg=ident.algorithm.encode(), sign_cert=ident.cert_chain_pem,
                                           private_key=ident.private_key_pem,
                                           ta_url=ident.tsa_url.encode() if ident.tsa_url else None)
                self._local.signer = c2pa.Signer.from_info(info)
            self._local.context = c2pa.Context.from_dict(CONTEXT_SETTINGS)
        return self._local.signer, self._local.context

    def sign(self, output: bytes, output_mime: str, lineage: Lineage, parent: bytes, parent_mime: str | None,
             quality: dict | None = None, *, title: str = "", embed: bool = True) -> SignedOutput:
        """The output with a manifest made by this identity, or SigningError saying why not."""
        dest = io.BytesIO()
        embedded, store, label = self.sign_stream(io.BytesIO(output), dest, output_mime, lineage, io.BytesIO(parent),
                                                  parent_mime, quality, title=title, embed=embed)
        if embedded:
            return SignedOutput(dest.getvalue(), None, label)
        return SignedOutput(output, store, label)

    def sign_stream(self, output, dest, output_mime: str, lineage: Lineage, parent, parent_mime: str | None,
                    quality: dict | None = None, *, title: str = "", embed: bool = True) -> tuple[bool, bytes, str]:
        """Sign the output read from the binary stream `output` (a video file: never all in memory) into
        `dest`: (embedded, manifest store, label); when not embedded, the store is the sidecar and
        `dest` is what c2pa wrote there (the output unchanged). `parent`: the input as a binary stream.
        SigningError saying why not."""
        c2pa = load_c2pa()
        signer, context = self._signer_and_context()
        label = f"urn:c2pa:{uuid.uuid4()}"
        definition = manifest_definition(lineage, quality, title=title, label=label)
        ingredient = {"title": lineage.source_key.rsplit("/", 1)[-1], "relationship": "parentOf", "label": "parent",
                      "metadata": {"org.op4ksr.sha256": lineage.source_sha256}}
        embedded = embed and output_mime in self.embeddable
        try:
            with self._builder(definition, context, ingredient, parent, parent_mime) as builder:
                if not embedded:
                    builder.set_no_embed()
                store = builder.sign(signer, output_mime, output, dest)
        except c2pa.C2paError as err:
            raise SigningError(f"C2PA signing failed: {err}") from err
        return embedded, bytes(store), label

    def _builder(self, definition: dict, context, ingredient: dict, parent, parent_mime: str | None):
        """A Builder with the parent ingredient: read from its bytes where c2pa can (so a master's own
        manifest is kept), else described (title, format, sha256) for a format c2pa cannot read."""
        c2pa = load_c2pa()
        if parent_mime in self.embeddable:
            builder = c2pa.Builder(definition, context)
            try:
                builder.add_ingredient(ingredient, parent_mime, parent)
                return builder
            except c2pa.C2paError:
                builder.close()  # e.g. a file Pillow reads but c2pa cannot parse: described instead
        described = ingredient | {"format": parent_mime or "application/octet-stream"}
        return c2pa.Builder(definition | {"ingredients": [described]}, context)


def manifest_definition(lineage: Lineage, quality: dict | None, *, title: str, label: str) -> dict:
    """The manifest's JSON definition (c2pa's ManifestDefinition): actions and the op4ksr assertion."""
    agent = {"name": "op4ksr", "version": lineage.software_version}
    edited = {"action": "c2pa.edited", "digitalSourceType": source_type_uri(lineage.digital_source_type),
              "softwareAgent": agent, "parameters": {"org.op4ksr.model_id": lineage.model_id,
                                                     "org.op4ksr.params_hash": lineage.params_hash}}
    resized = {"action": "c2pa.resized", "softwareAgent": agent}
    if lineage.input_size and lineage.output_size:
        resized["parameters"] = {"org.op4ksr.from": lineage.input_size, "org.op4ksr.to": lineage.output_size}
    ours = {"version": lineage.software_version, "model_id": lineage.model_id, "params_hash": lineage.params_hash,
            "digital_source_type": lineage.digital_source_type, "instance_id": lineage.instance_id,
            "source": {"key": lineage.source_key, "sha256": lineage.source_sha256, "etag": lineage.source_etag},
            "quality": quality}
    return {"claim_generator_info": [agent], "title": title or lineage.source_key, "label": label,
            "assertions": [
                {"label": "c2pa.actions.v2", "data": {"actions": [
                    {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}, edited, resized]}},
                {"label": ASSERTION, "data": ours}]}
