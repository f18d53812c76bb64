"""The shared vocabulary of a run: manifest rows from records, which rows are inputs given up on, stage timing."""
import time

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.manifest.records import (FIELDS, MANIFEST_SCHEMA, WORKER_DIED, given_up, manifest_table, new_record,
                                      stage_clock)

STATUS = ["ok", "failed", "failed", None, "failed", "skipped"]
ERROR_CLASS = [None, WORKER_DIED, "OSError", WORKER_DIED, None, WORKER_DIED]
EXPECTED = [False, True, False, False, False, False]


def test_given_up_is_failed_with_worker_died_and_null_is_not():
    assert given_up(pa.array(STATUS), pa.array(ERROR_CLASS)).to_pylist() == EXPECTED
    chunked = given_up(pa.chunked_array([STATUS[:2], STATUS[2:]]), pa.chunked_array([ERROR_CLASS[:2], ERROR_CLASS[2:]]))
    assert chunked.to_pylist() == EXPECTED


def test_given_up_reads_pandas_columns_as_the_finish_phase_has_them():
    frame = pa.table({"status": STATUS, "error_class": ERROR_CLASS}).to_pandas()
    assert given_up(frame["status"], frame["error_class"]).to_pylist() == EXPECTED
    assert given_up(pd.Series([], dtype=object), pd.Series([], dtype=object)).to_pylist() == []


def test_manifest_table_keeps_the_schema_and_fills_what_a_record_lacks():
    full = new_record("a.png", "r1", status="ok")
    partial = {"key": "b.png", "run_id": "r1", "status": "failed", "error": "x", "not_a_field": 1}
    table = manifest_table([full, partial])
    assert table.schema == MANIFEST_SCHEMA and table.column_names == list(FIELDS)
    rows = table.to_pylist()
    assert rows[0] == full and rows[1]["error"] == "x" and rows[1]["model_id"] is None
    assert manifest_table([]).num_rows == 0


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_stage_clock_writes_the_stage_wall_and_cpu_and_adds_to_the_total():
    record = {"cpu_seconds": 1.0}
    with stage_clock(record, "encode"):
        _spin(0.02)
    assert record["t_encode"] >= record["cpu_encode_seconds"] >= 0.02
    assert record["cpu_seconds"] == 1.0 + record["cpu_encode_seconds"]
    with stage_clock(record, "upload"):
        time.sleep(0.02)  # waiting costs wall time, not CPU
    assert record["t_upload"] >= 0.02 > record["cpu_upload_seconds"]
    assert record["cpu_seconds"] == pytest.approx(1.0 + record["cpu_encode_seconds"] + record["cpu_upload_seconds"])


def test_a_failed_stage_adds_its_cpu_but_writes_no_stage_time():
    record = {"cpu_seconds": None}
    with pytest.raises(OSError):
        with stage_clock(record, "upload"):
            _spin(0.01)
            raise OSError("refused")
    assert "t_upload" not in record and "cpu_upload_seconds" not in record and record["cpu_seconds"] >= 0.01
