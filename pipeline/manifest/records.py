"""The per-image record: one JSON report next to each output, one manifest row per input.

The field names are the contract of docs/PERIODICITY.md and docs/QUALITY.md; the cost report and `op4ksr cost` only sum
these columns, so every stage adds its own timings here and nothing else keeps state.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time

import pyarrow as pa
import pyarrow.compute as pc

STATUSES = ("ok", "failed", "skipped")

MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("status", pa.string()),
    ("error_class", pa.string()),
    ("error", pa.string()),
    ("attempts", pa.int32()),             # times the model stage was tried on it in this run (fleet/attempts.py)
    ("input_etag", pa.string()),
    ("input_size", pa.string()),          # "WxH" of the decoded input
    ("output_key", pa.string()),
    ("output_size", pa.string()),         # "WxH" of the output
    ("model_id", pa.string()),
    ("params_hash", pa.string()),
    ("period_px", pa.int32()),
    ("ap_score_out", pa.float64()),
    ("ap_score_in", pa.float64()),
    ("ap_excess", pa.float64()),
    ("dominant_period_px", pa.float64()),
    ("lr_consistency_psnr", pa.float64()),
    ("colour_shift", pa.float64()),       # largest channel-mean difference output vs input, [0, 1] units (docs/QUALITY.md)
    ("niqe", pa.float64()),               # NIQE of the output, lower is more natural; null below 96x192 px or flat
    ("flagged", pa.bool_()),
    # evidence that it is the same picture (docs/QUALITY.md, op4ksr/quality/evidence.py); null in older runs
    ("contradicted_fraction", pa.float64()),  # share of cells whose downscale contradicts the input
    ("worst_cell", pa.string()),          # "WxH+left+top" in output px of the most contradicted cell
    ("worst_cell_score", pa.float64()),   # its departure in tolerances (contradicted above report.cell_threshold)
    ("added_detail", pa.float64()),       # energy above the input's Nyquist band over bicubic's (1: bicubic)
    ("faces", pa.int32()),                # frontal faces found in the input
    ("face_contradiction", pa.float64()), # the largest cell score over them
    ("text_cer", pa.float64()),           # character error rate of the input's confident words in the output
    ("text_words", pa.int32()),           # confident words compared
    ("changed_words", pa.string()),       # JSON list of {"input", "output", "top", "left", "height", "width"}
    ("evidence_flagged", pa.bool_()),     # contradicted cells, changed text or a redrawn face above the thresholds
    ("evidence_notes", pa.string()),      # why a check did not run ("text: no text found; ...")
    ("heatmap_key", pa.string()),         # reports/<name>.contradiction.png of a flagged image
    ("digital_source_type", pa.string()), # the IPTC term the output's XMP and C2PA manifest carry (docs/PROVENANCE.md)
    ("c2pa", pa.string()),                # signed | sidecar | none: the output's C2PA manifest
    ("c2pa_manifest", pa.string()),       # its label (urn:c2pa:...), null without one
    ("t_fetch", pa.float64()),
    ("t_decode", pa.float64()),
    ("t_model", pa.float64()),            # wall seconds of the batch forward this image was in
    ("t_quality", pa.float64()),          # wall seconds of NIQE and colour shift on the CPU after the forward
    ("t_encode", pa.float64()),
    ("t_upload", pa.float64()),
    ("gpu_seconds", pa.float64()),        # device seconds of this image's share of the forward
    ("cpu_seconds", pa.float64()),        # CPU seconds of the CPU stages (fetch, decode, encode, upload)
    ("bytes_in", pa.int64()),
    ("bytes_out", pa.int64()),
    ("requests_get", pa.int64()),
    ("requests_put", pa.int64()),
    ("actor_id", pa.string()),
    ("run_id", pa.string()),
    # For the cost ledger and the traces (pipeline/ledger/cost.py, pipeline/run/telemetry.py, docs/COST.md):
    ("traceparent", pa.string()),         # W3C trace context of the run span, carried driver -> workers -> driver
    ("started_at", pa.float64()),         # unix seconds: the fetch stage began (t_fetch, t_decode follow it)
    ("model_started_at", pa.float64()),   # unix seconds: this image's batch forward began (t_model long)
    ("encode_started_at", pa.float64()),  # unix seconds: its encode began (t_encode, t_upload follow it)
    ("cpu_fetch_seconds", pa.float64()),  # thread CPU seconds per CPU stage; cpu_seconds is their total
    ("cpu_decode_seconds", pa.float64()),
    ("cpu_quality_seconds", pa.float64()),
    ("cpu_encode_seconds", pa.float64()),
    ("cpu_provenance_seconds", pa.float64()),  # the XMP label's merge and the C2PA signing (docs/PROVENANCE.md)
    ("cpu_upload_seconds", pa.float64()),
    ("device", pa.string()),              # the actor's torch device: cpu, cuda:0, ...
    ("actor_started_at", pa.float64()),   # unix seconds: the actor began loading the model
    ("actor_load_seconds", pa.float64()), # the actor's one-off costs, repeated on each of its rows
    ("actor_warmup_seconds", pa.float64()),
])
FIELDS = tuple(MANIFEST_SCHEMA.names)


def manifest_table(records) -> pa.Table:
    """Records as manifest rows (MANIFEST_SCHEMA): each record's manifest fields, None where it has none."""
    return pa.Table.from_pylist([{k: r.get(k) for k in FIELDS} for r in records], schema=MANIFEST_SCHEMA)


@contextlib.contextmanager
def stage_clock(record: dict, stage: str):
    """Time one stage of a record on this thread: t_<stage> (wall seconds) and cpu_<stage>_seconds
    (this thread's CPU seconds) when the stage completes; its CPU is added to cpu_seconds, the
    record's total, even when it fails (a failed stage still cost what it ran)."""
    cpu0, start = time.thread_time(), time.perf_counter()
    try:
        yield
    except BaseException:
        record["cpu_seconds"] = (record.get("cpu_seconds") or 0.0) + time.thread_time() - cpu0
        raise
    cpu = time.thread_time() - cpu0
    record.update({f"t_{stage}": time.perf_counter() - start, f"cpu_{stage}_seconds": cpu,
                   "cpu_seconds": (record.get("cpu_seconds") or 0.0) + cpu})


def new_record(key: str, run_id: str, **values) -> dict:
    """A record with every field present (None where unknown) and `values` filled in."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"not manifest fields: {', '.join(sorted(unknown))}")
    record = dict.fromkeys(FIELDS)
    record.update(key=key, run_id=run_id, **values)
    return record


class WorkerDiedError(RuntimeError):
    """The model actor's process died with this input in every attempt (pipeline/fleet/attempts.py)."""


WORKER_DIED = WorkerDiedError.__name__  # the error_class of an input given up on


def given_up(status, error_class) -> pa.BooleanArray:
    """Which manifest rows are inputs given up on (failed with WORKER_DIED), from their status and
    error_class columns (pyarrow arrays or pandas Series); a null is not given up."""
    def column(values):
        return values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.string())

    died = pc.and_kleene(pc.equal(column(status), "failed"), pc.equal(column(error_class), WORKER_DIED))
    return pc.fill_null(died, False)


def failed(record: dict, err: BaseException) -> dict:
    """The record marked failed with the error's class and a one-line message."""
    message = " ".join(str(err).split()) or type(err).__name__
    record.update(status="failed", error_class=type(err).__name__, error=message[:500])
    return record


def params_hash(params: dict) -> str:
    """Short stable hash of everything that changes an output's pixels or bytes."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_done(report: dict | None, input_etag: str, model_id: str, params: str) -> bool:
    """True when a stored report proves this input was already produced with this model and params."""
    return bool(report) and report.get("status") == "ok" and report.get("input_etag") == input_etag \
        and report.get("model_id") == model_id and report.get("params_hash") == params
