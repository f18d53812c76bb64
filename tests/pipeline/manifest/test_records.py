"""The shared vocabulary of a run: manifest rows from records, and which rows are inputs given up on."""
import pandas as pd
import pyarrow as pa

from pipeline.manifest.records import FIELDS, MANIFEST_SCHEMA, WORKER_DIED, given_up, manifest_table, new_record

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
