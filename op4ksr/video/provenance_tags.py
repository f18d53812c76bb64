"""An output video's provenance as the container carries it: tags, and in Matroska the XMP packet.

The same facts an upscaled image's XMP carries (op4ksr.provenance.xmp): version, model id, the IPTC
digital source type and the source's name and sha256. Matroska writes them as SimpleTags (file
level; the video track also carries the source type and model, the audio it copies was not made by
a model) and attaches the XMP packet as `op4ksr.xmp` (application/rdf+xml). MOV/MP4 write them as
QuickTime metadata keys (the muxer's `use_metadata_tags`); they have no attachments, so no XMP. Both
are read back by PyAV (`container.metadata`) and exiftool. With a signer, the finished file gets a
C2PA manifest (sign_video): embedded in MOV/MP4, which c2pa-python embeds in (a BMFF hash), and in a
`<output>.c2pa` sidecar for Matroska, which it cannot embed in (a data hash of every byte).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from op4ksr.provenance.lineage import GENERATIVE, Lineage, source_type_uri
from op4ksr.provenance.xmp import merged_xmp

XMP_ATTACHMENT = ("op4ksr.xmp", "application/rdf+xml")
VIDEO_MIME = {".mov": "video/quicktime", ".mp4": "video/mp4", ".m4v": "video/x-m4v", ".mkv": "video/x-matroska",
              ".avi": "video/x-msvideo", ".webm": "video/webm", ".mxf": "application/mxf"}
QUICKTIME = (".mov", ".mp4", ".m4v")


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """The sha256 of a file read in blocks (a master may not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def file_tags(lineage: Lineage) -> dict[str, str]:
    """The container's tags: what made the file and from what."""
    tags = {"COMMENT": f"{lineage.parameters}; by {lineage.software_agent}; from {lineage.source_key}",
            "OP4KSR_VERSION": lineage.software_version, "OP4KSR_MODEL_ID": lineage.model_id,
            "DIGITAL_SOURCE_TYPE": source_type_uri(lineage.digital_source_type),
            "OP4KSR_SOURCE": lineage.source_key, "OP4KSR_SOURCE_SHA256": lineage.source_sha256,
            "OP4KSR_WHEN": lineage.when}
    if lineage.params_hash:
        tags["OP4KSR_PARAMS_HASH"] = lineage.params_hash
    return tags


def video_stream_tags(lineage: Lineage) -> dict[str, str]:
    """The upscaled video track's own tags (copied audio and subtitles get none: no model made them)."""
    return {"DIGITAL_SOURCE_TYPE": source_type_uri(lineage.digital_source_type), "OP4KSR_MODEL_ID": lineage.model_id}


def muxer_options(path: Path) -> dict[str, str]:
    """What the muxer of `path` needs to write arbitrary tags (QuickTime keys in MOV/MP4)."""
    return {"movflags": "use_metadata_tags"} if path.suffix.lower() in QUICKTIME else {}


def xmp_attachment(path: Path, lineage: Lineage) -> tuple[str, str, bytes] | None:
    """(name, mime type, packet) to attach to `path`, or None where its container has no attachments."""
    if path.suffix.lower() != ".mkv":
        return None
    return (*XMP_ATTACHMENT, merged_xmp(None, lineage))


def video_lineage(source: Path, provenance: dict, input_size: tuple[int, int], output_size: tuple[int, int]) -> Lineage:
    """The output video's Lineage from `provenance` (version, model_id, optional params_hash and
    digital_source_type; a generative upscale unless it says otherwise); sizes (H, W)."""
    return Lineage(source_key=str(source), source_sha256=file_sha256(source),
                   software_version=provenance.get("version", ""), model_id=provenance.get("model_id", ""),
                   params_hash=provenance.get("params_hash"),
                   digital_source_type=provenance.get("digital_source_type", GENERATIVE),
                   input_size=f"{input_size[1]}x{input_size[0]}", output_size=f"{output_size[1]}x{output_size[0]}")


def sign_video(signer, path: Path, source: Path, lineage: Lineage, sidecar: Path, embed: bool = True) -> dict:
    """Sign the finished video at `path` (a ManifestSigner's identity), streaming it from disk: the
    manifest embedded in place where c2pa embeds in the format (and `embed`), else written to `sidecar`
    (c2pa still writes the file's copy, which is dropped). The report's fields (c2pa, c2pa_manifest);
    SigningError if c2pa cannot sign it."""
    signing = path.with_name(path.name + ".signing")
    try:
        with open(path, "rb") as output, open(source, "rb") as parent, open(signing, "w+b") as dest:
            embedded, store, label = signer.sign_stream(
                output, dest, VIDEO_MIME.get(path.suffix.lower(), "application/octet-stream"), lineage, parent,
                VIDEO_MIME.get(source.suffix.lower()), title=sidecar.name.removesuffix(".c2pa"), embed=embed)
        if embedded:
            signing.replace(path)
        else:
            sidecar.write_bytes(store)
    finally:
        signing.unlink(missing_ok=True)
    return {"c2pa": "signed" if embedded else "sidecar", "c2pa_manifest": label}
