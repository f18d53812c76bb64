"""The model actor's provenance step: each output labelled (XMP) and, with an identity, signed (C2PA).

Signing happens in the encode step, before anything is written: a failure to sign fails that
row, and no unsigned output is put where a signed one was expected. The identity is loaded in
the actor from where provenance.* says it lies (pipeline/fleet/signing.py), never shipped in.
"""
from __future__ import annotations

import time
from typing import Callable

import op4ksr
from op4ksr.images.codec import DecodedImage
from op4ksr.provenance.lineage import Lineage
from op4ksr.provenance.manifest import MIME, SIDECAR_SUFFIX, ManifestSigner, quality_summary
from op4ksr.provenance.xmp import merged_xmp
from pipeline.fleet.signing import ProvenanceOptions


class OutputStamper:
    """`stamp(record, image, encode, mime) -> (bytes to put, sidecar or None)`, filling the record's provenance fields."""

    def __init__(self, options: ProvenanceOptions, model_id: str, params_hash: str):
        self.options, self.model_id, self.params_hash = options, model_id, params_hash
        self.signer = ManifestSigner(options.signing.load()) if options.signing else None

    def stamp(self, record: dict, image: DecodedImage, encode: Callable[[bytes | None], bytes],
              mime: str) -> tuple[bytes, bytes | None]:
        """The output encoded with its merged XMP, then signed; the CPU seconds of XMP + signing go to
        `cpu_provenance_seconds` (the encode's own to the caller's `cpu_encode_seconds`)."""
        cpu0 = time.thread_time()
        lineage = Lineage(source_key=record["key"], source_sha256=image.source_sha256 or "",
                          software_version=op4ksr.__version__, model_id=self.model_id, params_hash=self.params_hash,
                          digital_source_type=self.options.digital_source_type, source_etag=record.get("input_etag"),
                          input_size=record.get("input_size"), output_size=record.get("output_size"))
        xmp = merged_xmp(image.xmp, lineage)
        cpu_xmp = time.thread_time() - cpu0
        data = encode(xmp)
        cpu1 = time.thread_time()
        fields = {"digital_source_type": lineage.digital_source_type, "c2pa": "none", "c2pa_manifest": None}
        sidecar = None
        if self.signer is not None:
            signed = self.signer.sign(data, mime, lineage, image.source_bytes or b"",
                                      MIME.get(image.source_format) if image.source_bytes else None,
                                      quality_summary(record), title=record["output_key"], embed=self.options.embed)
            data, sidecar = signed.data, signed.sidecar
            fields.update(c2pa=signed.c2pa, c2pa_manifest=signed.label)
        record.update(fields, cpu_provenance_seconds=cpu_xmp + time.thread_time() - cpu1)
        return data, sidecar


def sidecar_key(output_key: str) -> str:
    """Where a sidecar manifest store lies: next to its output, `<output>.c2pa`."""
    return output_key + SIDECAR_SUFFIX
