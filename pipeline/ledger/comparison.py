"""`op4ksr compare`'s numbers: per image and per variant, from each variant's reports, manifest and ledger.

A variant is one backfill over the comparison's sample under its own output prefix. Per image,
its stored report (reports/<key>.json) gives the quality metrics, whatever fields the report
carries, and the run that wrote it; that run's cost ledger (runs/<id>/cost.parquet) prices
it, so a variant reused by a rerun still shows what it cost when it ran. The latest run's
manifest gives the inputs that failed (a failed input has no report).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import numbers

import pandas as pd

from op4ksr.errors import UserError
from pipeline.ledger.manifest_scan import scan_manifest, scan_parquet
from pipeline.manifest.layout import report_key, run_key
from pipeline.manifest.records import FIELDS
from pipeline.storage import ObjectNotFoundError, Storage

logger = logging.getLogger("op4ksr.comparison")  # a note on the command's stderr (jobs/cli.py show_notes)

# the manifest's quality fields, first in the tables; numeric report fields outside the manifest follow
EVIDENCE_METRICS = ("contradicted_fraction", "added_detail", "text_cer")  # op4ksr/quality/evidence.py
QUALITY_FIELDS = ("lr_consistency_psnr", "colour_shift", "niqe", "ap_excess", *EVIDENCE_METRICS)
# numeric manifest fields that are timings, sizes or counters, not quality
_NOT_QUALITY = {"period_px", "ap_score_out", "ap_score_in", "dominant_period_px", "bytes_in", "bytes_out",
                "requests_get", "requests_put", "faces", "text_words"}
IMAGE_COLUMNS = ["variant", "key", "status", "error", "input_size", "output_size", "output_key", "model_id",
                 "run_id", "flagged", "gpu_seconds", "cpu_seconds", "total_usd",
                 # the evidence's (op4ksr/quality/evidence.py) that are not means: for the page's evidence section
                 "evidence_flagged", "worst_cell", "worst_cell_score", "faces", "face_contradiction", "text_words",
                 "changed_words", "heatmap_key"]


@dataclasses.dataclass(frozen=True)
class VariantRun:
    """One variant's outputs and the id of its latest run over the sample."""

    name: str
    outputs: Storage
    run_id: str


def quality_fields(frame: pd.DataFrame) -> list[str]:
    """The quality metric columns of a per-image table: the manifest's, then any the reports added (NIQE, ...)."""
    known = set(FIELDS) | set(IMAGE_COLUMNS)
    extra = sorted(c for c in frame.columns if c not in known and pd.api.types.is_numeric_dtype(frame[c])
                   and not pd.api.types.is_bool_dtype(frame[c]))
    return [c for c in QUALITY_FIELDS if c in frame.columns] + extra


def image_rows(variant: VariantRun, keys: list[str]) -> pd.DataFrame:
    """One row per sample key: the report's fields (ok) or the latest manifest's error (failed), priced."""
    failures = _latest_failures(variant)
    rows = []
    for key in keys:
        report = _report(variant.outputs, key)
        if report is not None:
            row = {k: v for k, v in report.items() if k in IMAGE_COLUMNS or _is_metric(k, v)}
        else:
            failure = failures.get(key, {})
            row = {"key": key, "status": failure.get("status", "missing"), "error": failure.get("error")}
        rows.append(row | {"variant": variant.name})
    frame = pd.DataFrame(rows)
    for column in [*IMAGE_COLUMNS, *EVIDENCE_METRICS]:  # a column even where no report has a value
        if column not in frame:
            frame[column] = None
    return _priced(frame, variant.outputs)


def _is_metric(key: str, value) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and key not in _NOT_QUALITY and (key not in FIELDS or key in QUALITY_FIELDS))


def _report(outputs: Storage, key: str) -> dict | None:
    try:
        report = json.loads(outputs.get(report_key(key)))
    except (ObjectNotFoundError, ValueError):
        return None
    return report if report.get("status") == "ok" else None


def _latest_failures(variant: VariantRun) -> dict[str, dict]:
    """The failed rows of the variant's latest run (its manifest), by key."""
    failures = {}
    try:
        for batch in scan_manifest(run_storage(variant.outputs, variant.run_id), ["key", "status", "error"]):
            failures |= {row["key"]: row for row in batch.to_pylist() if row["status"] == "failed"}
    except UserError:  # no manifest parts: the run processed nothing
        return {}
    return failures


def run_storage(outputs: Storage, run_id: str) -> Storage:
    """runs/<run_id>/ under an output prefix, as a storage."""
    return outputs.child(run_key(run_id, ""))


def _priced(frame: pd.DataFrame, outputs: Storage) -> pd.DataFrame:
    """total_usd of each ok image from the ledger of the run that produced it."""
    usd = {}
    for run_id in sorted(set(frame["run_id"].dropna())):
        try:
            for batch in scan_parquet(run_storage(outputs, run_id), ["cost.parquet"], ["key", "status", "total_usd"]):
                usd |= {(run_id, r["key"]): r["total_usd"] for r in batch.to_pylist() if r["status"] == "ok"}
        except (ObjectNotFoundError, FileNotFoundError, OSError):
            continue  # a run without a ledger (killed before its finish): its images stay unpriced, and are named below
    frame["total_usd"] = [usd.get((r, k)) for r, k in zip(frame["run_id"], frame["key"])]
    unpriced = frame[(frame["status"] == "ok") & frame["total_usd"].isna()]
    if len(unpriced):
        runs = sorted(set(unpriced["run_id"].dropna()))
        logger.warning("%s: %d image(s) counted but not priced (%s): run(s) %s have no cost ledger (killed before "
                       "their finish); `op4ksr report %s` rebuilds one", outputs.spec.uri, len(unpriced),
                       ", ".join(unpriced["key"].head(3)) + (", ..." if len(unpriced) > 3 else ""), ", ".join(runs),
                       run_storage(outputs, runs[0]).spec.uri if runs else "<run folder>")
    return frame


def variant_table(images: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Per variant: images ok, failed, flagged; mean of each quality metric; forward seconds, CPU seconds and
    USD per ok image."""
    metrics = quality_fields(images)
    rows = []
    for name in order:
        part = images[images["variant"] == name]
        ok = part[part["status"] == "ok"]
        row = {"variant": name, "model_id": next(iter(ok["model_id"].dropna()), None), "ok": len(ok),
               "failed": int((part["status"] != "ok").sum()),
               "flagged": int(ok["flagged"].fillna(False).astype(bool).sum()),
               "evidence_flagged": int(ok["evidence_flagged"].fillna(False).astype(bool).sum())}
        row |= {m: _mean(ok[m]) for m in metrics}
        row |= {"model_s_per_image": _mean(ok["gpu_seconds"]), "cpu_s_per_image": _mean(ok["cpu_seconds"]),
                "usd_per_image": _mean(ok["total_usd"])}
        rows.append(row)
    return pd.DataFrame(rows)


def _mean(values: pd.Series) -> float | None:
    numbers_ = pd.to_numeric(values, errors="coerce").dropna()
    return float(numbers_.mean()) if len(numbers_) else None
