"""The per-frame record of a frame-sequence run (`op4ksr video --ray`): one manifest row per frame.

A chunk's actor writes its rows to runs/<id>/frames/<sequence>/<shot>-<chunk>.parquet once every
output frame of the chunk is stored, so a row always implies a whole output, and a driver killed
mid-run loses no row of a chunk that finished. Those files are the run's manifest; a later run
reads every run's rows to know which frames are done (pipeline/run/film_plan.py).
"""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

FRAME_STATUSES = ("done", "failed")  # failed: filled from bicubic, written, redone by the next run

FRAME_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("sequence", pa.string()),        # its label: dir/name.%04d.ext
    ("frame", pa.int64()),            # the frame number in the file name
    ("key", pa.string()),             # the input frame's key under input.uri
    ("shot", pa.int32()),             # the shot's number in its sequence (from 0)
    ("chunk", pa.int32()),            # the chunk's number in its shot (from 0)
    ("status", pa.string()),          # done | failed
    ("error", pa.string()),           # why a failed frame was filled from bicubic
    ("seconds", pa.float64()),        # wall seconds inside the model for this frame
    ("lead_in_seconds", pa.float64()),  # its share of the model seconds of the chunk's lead-in frames (flow)
    ("output_key", pa.string()),      # where the output frame is, under output.uri
    ("model_id", pa.string()),
    ("params_hash", pa.string()),
    ("actor_id", pa.string()),
    ("finished_at", pa.float64()),    # unix seconds: the chunk's rows were written
])
FRAME_FIELDS = tuple(FRAME_SCHEMA.names)


def frame_table(rows: list[dict]) -> pa.Table:
    """Rows as FRAME_SCHEMA (None where a row has no value)."""
    return pa.Table.from_pylist([{k: r.get(k) for k in FRAME_FIELDS} for r in rows], schema=FRAME_SCHEMA)


def frame_rows_bytes(rows: list[dict]) -> bytes:
    """Rows as one Parquet file's bytes."""
    out = io.BytesIO()
    pq.write_table(frame_table(rows), out)
    return out.getvalue()


def read_frame_rows(data: bytes) -> list[dict]:
    return pq.read_table(io.BytesIO(data), schema=FRAME_SCHEMA).to_pylist()


def frame_cost(rows: list[dict], gpu_hour_usd: float, fps: float) -> dict:
    """What the rows' frames cost in model time: USD per frame (the model seconds, lead-in share
    included, at `gpu_hour_usd`) and per minute of footage (fps x 60 frames)."""
    seconds = sum((r["seconds"] or 0.0) + (r["lead_in_seconds"] or 0.0) for r in rows)
    frames = len(rows)
    per_frame = seconds * gpu_hour_usd / 3600 / frames if frames else None
    return {"frames": frames, "model_seconds": round(seconds, 6), "gpu_hour_usd": gpu_hour_usd, "fps": fps,
            "usd": seconds * gpu_hour_usd / 3600, "usd_per_frame": per_frame,
            "model_seconds_per_frame": seconds / frames if frames else None,
            "usd_per_footage_minute": None if per_frame is None else per_frame * fps * 60}
