"""An output encoded with its provenance: the XMP label always, a signed C2PA manifest when there is a signer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from op4ksr.provenance.lineage import Lineage
from op4ksr.provenance.manifest import ManifestSigner, SignedOutput
from op4ksr.provenance.xmp import merged_xmp

NO_MANIFEST_NOTE = "no signing identity (provenance.cert_chain): outputs carry the XMP label but no C2PA manifest"


@dataclass(frozen=True)
class StampedOutput:
    data: bytes
    sidecar: bytes | None        # the `.c2pa` manifest store to write next to the output, if any
    c2pa: str                    # signed | sidecar | none
    label: str | None            # the C2PA manifest's label
    digital_source_type: str

    def record_fields(self) -> dict:
        """What the per-image report and the manifest row say of it."""
        return {"digital_source_type": self.digital_source_type, "c2pa": self.c2pa, "c2pa_manifest": self.label}


def stamp_output(encode: Callable[[bytes], bytes], source_xmp: bytes | None, lineage: Lineage,
                 signer: ManifestSigner | None, *, output_mime: str, parent: bytes | None = None,
                 parent_mime: str | None = None, quality: dict | None = None, title: str = "",
                 embed: bool = True) -> StampedOutput:
    """`encode(xmp) -> bytes` run with the merged XMP, then signed; SigningError if signing fails.

    `parent`: the input's bytes, needed when there is a signer (the manifest's parentOf ingredient)."""
    data = encode(merged_xmp(source_xmp, lineage))
    if signer is None:
        return StampedOutput(data, None, "none", None, lineage.digital_source_type)
    if parent is None:
        raise ValueError("a signed output needs its input's bytes (parent) for the parentOf ingredient")
    signed: SignedOutput = signer.sign(data, output_mime, lineage, parent, parent_mime, quality, title=title,
                                       embed=embed)
    return StampedOutput(signed.data, signed.sidecar, signed.c2pa, signed.label, lineage.digital_source_type)
