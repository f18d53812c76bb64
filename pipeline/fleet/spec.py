"""The typed specs of the model stage: the actor pool, the model actor's options, the model it loads.

Plain, picklable, keyword-only dataclasses with no defaults of their own for what the config
decides: configs/default.yaml is the contract, and jobs/specs.py builds these from it in one
place. Nothing here reads a config object.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from op4ksr.loading import ModelSpec
from pipeline.fleet.signing import ProvenanceOptions
from pipeline.storage import StorageSpec

if TYPE_CHECKING:  # built by jobs/specs.py; importing it here would import torch into every spec reader
    from op4ksr.quality.evidence import EvidenceOptions


@dataclass(frozen=True, kw_only=True)
class PoolSpec:
    """The model actor pool and the fetch/decode tasks that feed it (actors.*, pipeline.*)."""

    min_actors: int
    max_actors: int
    batch_size: int
    num_gpus: float
    num_cpus: float
    decode_num_cpus: float
    fetch_tasks: int  # fetch/decode tasks at once
    fetch_threads: int  # inputs fetched at once within one task
    start_timeout_s: float  # until min_actors actors are up, or the run fails
    resources: Mapping[str, float]  # Ray custom resources per actor (empty: none)
    max_attempts_per_input: int  # attempts of an input whose processing kills the actor's process

    def resources_text(self) -> str:
        """What one model actor asks of a node, for the messages of a run that waits for room."""
        custom = "".join(f" and {name} {amount:g}" for name, amount in self.resources.items())
        return f"{self.num_gpus:g} GPU and {self.num_cpus:g} CPU{custom} each"


@dataclass(frozen=True, kw_only=True)
class ActorOptions:
    """What the model actor needs besides the model: where and how to write outputs and reports."""

    output: StorageSpec
    output_format: str
    quality: int
    png_compress_level: int
    report_threshold: float
    period_px: int | None  # None: the model's token period
    max_lag_multiple: int
    warmup_shapes: tuple[tuple[int, int], ...]
    upload_threads: int
    params_hash: str
    torch_threads: int | None  # None: Ray's default (OMP_NUM_THREADS = the actor's whole CPUs, at least 1)
    evidence: EvidenceOptions  # report.*: the contradiction map, faces, text (op4ksr/quality/evidence.py)
    provenance: ProvenanceOptions  # the XMP label's source type; the signing identity's location (not its key)


PeerKindName = Literal["spandrel", "command"]  # peer.kind (empty: no peer); actors.peers.PEER_KINDS runs them


@dataclass(frozen=True, kw_only=True)
class PeerSpec:
    """Another upscaler run in the model actor's place (actors/peers.py; config `peer.*`)."""

    kind: PeerKindName
    path: str  # spandrel: a .safetensors checkpoint
    command: str  # command: a command line with {input}, {output} and {scale}
    tile: int  # spandrel: LR tile side in px (0: whole images)
    tile_overlap: int  # spandrel: LR px shared by neighbouring tiles
    timeout_s: float  # command: seconds one image may take


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """The model to load in the actor; `storage` is set when the checkpoint lies under an object-store prefix;
    `peer` when another upscaler runs instead of the op4ksr model."""

    spec: ModelSpec
    storage: StorageSpec | None = None
    peer: PeerSpec | None = None
