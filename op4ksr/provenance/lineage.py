"""What made an output: the facts written into its XMP and its C2PA manifest, and the IPTC terms.

IPTC Digital Source Type (https://cv.iptc.org/newscodes/digitalsourcetype/): a generative
upscale (the op4ksr model, a GAN peer) is `compositeWithTrainedAlgorithmicMedia`, "edited using
generative AI"; interpolation (bicubic, back-projection alone) is `algorithmicallyEnhanced`,
"enhanced without changing the main content". Which applies is a per-model setting
(provenance.digital_source_type); `auto` picks by the kind of model.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass, field

IPTC_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATIVE = "compositeWithTrainedAlgorithmicMedia"
INTERPOLATED = "algorithmicallyEnhanced"
SOURCE_TYPES = (GENERATIVE, INTERPOLATED, "trainedAlgorithmicMedia", "compositeSynthetic", "composite",
                "digitalCapture", "minorHumanEdits")
ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")  # C2PA signing algorithms
# model kinds that interpolate rather than generate (compare.py's baselines, a command peer said to be one)
INTERPOLATING_KINDS = ("bicubic", "back-projection", "interpolation")


def source_type_for(setting: str, model_kind: str) -> str:
    """The IPTC term for an output: `setting` itself, or for `auto` the one the model's kind implies."""
    if setting != "auto":
        if setting not in SOURCE_TYPES:
            raise ValueError(f"digital source type {setting!r} is not one of auto, {', '.join(SOURCE_TYPES)}")
        return setting
    return INTERPOLATED if model_kind in INTERPOLATING_KINDS else GENERATIVE


def source_type_uri(term: str) -> str:
    """The term as the IPTC URI both XMP and C2PA carry."""
    return IPTC_SOURCE_TYPES + term


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Lineage:
    """One output's origin: its input, the software and model that made it, and under which settings."""

    source_key: str            # the input's key or path, as listed
    source_sha256: str         # of the input's bytes as read: what `op4ksr verify --inputs` checks
    software_version: str      # op4ksr's version
    model_id: str
    params_hash: str | None
    digital_source_type: str   # an IPTC term (SOURCE_TYPES)
    source_etag: str | None = None
    input_size: str | None = None    # "WxH"
    output_size: str | None = None   # "WxH"
    when: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    document_id: str = field(default_factory=lambda: f"xmp.did:{uuid.uuid4()}")
    instance_id: str = field(default_factory=lambda: f"xmp.iid:{uuid.uuid4()}")

    @property
    def software_agent(self) -> str:
        return f"op4ksr {self.software_version} (model {self.model_id})"

    @property
    def parameters(self) -> str:
        """The History event's parameters: what was done, and the params hash that pins the settings."""
        sizes = f" from {self.input_size} to {self.output_size}" if self.input_size and self.output_size else ""
        return f"upscaled{sizes}; params_hash={self.params_hash or 'none'}; {self.digital_source_type}"
